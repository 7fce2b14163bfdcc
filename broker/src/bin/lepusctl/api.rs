//! The management API client: [`Api`] (HTTP with basic auth, JSON in and out) and
//! [`CtlError`], a failed command with its exit status.

use serde_json::Value;

use crate::cli::Cli;

/// Why a command failed, with its exit status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    #[error("cannot reach the management API at {api}: {cause}")]
    Unreachable { api: String, cause: String },
    #[error("{0}")]
    Refused(String),
    /// The API answered, but its answer could not be read whole or is not JSON. Never taken
    /// for an empty answer: a listing or a definitions export read as nothing would be wrong
    /// without a word (ureq reads at most 10 MiB unless told otherwise).
    #[error("cannot read the management API's answer: {0}")]
    BadAnswer(String),
}

impl CtlError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => 69,
            Self::Refused(_) => 70,
            // EX_PROTOCOL.
            Self::BadAnswer(_) => 76,
        }
    }
}

/// The largest answer read (a definitions export or a queue listing of a big broker runs to
/// hundreds of MiB only with millions of objects).
const MAX_ANSWER_BYTES: u64 = 1 << 30;

/// The management API over HTTP.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) auth: String,
    pub(crate) agent: ureq::Agent,
}

/// `url` with the password of its userinfo (`scheme://user:password@host`) masked, for
/// messages: `LEPUS_API` may carry credentials.
pub(crate) fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            )
        }
        None => url.to_owned(),
    }
}

impl Api {
    pub(crate) fn new(cli: &Cli) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cli.user, cli.password));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: cli.api.trim_end_matches('/').to_owned(),
            auth: format!("Basic {token}"),
            agent,
        }
    }

    pub(crate) fn finish(
        &self,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CtlError> {
        let mut resp = res.map_err(|e| CtlError::Unreachable {
            api: without_password(&self.base),
            cause: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| CtlError::BadAnswer(format!("HTTP {status}: {e}")))?;
        if status.is_success() {
            if text.trim().is_empty() {
                // 201/204 of a write: nothing to show.
                return Ok(Value::Null);
            }
            serde_json::from_str(&text)
                .map_err(|e| CtlError::BadAnswer(format!("HTTP {status}, not JSON: {e}")))
        } else {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let reason = body
                .get("reason")
                .and_then(Value::as_str)
                .map_or_else(|| format!("HTTP {status}"), str::to_owned);
            Err(CtlError::Refused(reason))
        }
    }

    /// `GET path`: the JSON answered, or why the API refused.
    pub(crate) fn get(&self, path: &str) -> Result<Value, CtlError> {
        let request = self.agent.get(format!("{}{path}", self.base));
        self.finish(request.header("Authorization", &self.auth).call())
    }

    /// `PUT path` with a JSON `body`: the JSON answered, or why the API refused.
    pub(crate) fn put(&self, path: &str, body: Value) -> Result<Value, CtlError> {
        let request = self.agent.put(format!("{}{path}", self.base));
        self.finish(request.header("Authorization", &self.auth).send_json(body))
    }

    /// `POST path` with `body`, already JSON text: the JSON answered, or why the API refused.
    pub(crate) fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Value, CtlError> {
        let request = self.agent.post(format!("{}{path}", self.base));
        let request = request.header("Content-Type", "application/json");
        self.finish(request.header("Authorization", &self.auth).send(body))
    }

    /// `DELETE path`: the JSON answered, or why the API refused.
    pub(crate) fn delete(&self, path: &str) -> Result<Value, CtlError> {
        let request = self.agent.delete(format!("{}{path}", self.base));
        self.finish(request.header("Authorization", &self.auth).call())
    }
}
