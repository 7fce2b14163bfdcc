//! A small HTTP client for management APIs (Lepus's in-process one, or RabbitMQ's), run off
//! the async runtime so that an in-process broker on the same runtime keeps serving.

use base64::Engine;
use serde_json::Value;

/// Percent-encodes one path segment (the broker's own encoder).
pub(crate) use lepus_broker::percent_encode as seg;

/// A management API at `base` (`http://127.0.0.1:15672`), as one user.
#[derive(Clone)]
pub(crate) struct Api {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

/// One answer: status, the body parsed as JSON (`Null` if it is not JSON), the body as text.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) json: Value,
    pub(crate) text: String,
}

/// The whole body of `resp` as text. ureq reads 10 MiB unless told more, and a listing of a
/// broker full of queues is larger: an answer cut short (or unreadable) is an error here, never
/// an empty text.
pub(crate) fn body_text(
    resp: &mut ureq::http::Response<ureq::Body>,
) -> Result<String, ureq::Error> {
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
}

impl Answer {
    /// Reads `resp`'s status and whole body.
    fn read(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
        let status = resp.status().as_u16();
        let text = body_text(&mut resp).expect("read the whole answer");
        Answer {
            status,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }
}

impl Api {
    pub(crate) fn new(base: &str, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            auth: format!("Basic {token}"),
            agent,
        }
    }

    /// The same API as another user.
    pub(crate) fn as_user(&self, user: &str, password: &str) -> Self {
        Self::new(&self.base, user, password)
    }

    /// `METHOD base+path` with an optional JSON body.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let me = self.clone();
        let method = method.to_owned();
        let url = format!("{}{path}", self.base);
        tokio::task::spawn_blocking(move || {
            let res = match method.as_str() {
                "GET" => me.agent.get(&url).header("Authorization", &me.auth).call(),
                "DELETE" => me
                    .agent
                    .delete(&url)
                    .header("Authorization", &me.auth)
                    .call(),
                "PUT" => me
                    .agent
                    .put(&url)
                    .header("Authorization", &me.auth)
                    .send_json(body.unwrap_or(Value::Object(Default::default()))),
                "POST" => me
                    .agent
                    .post(&url)
                    .header("Authorization", &me.auth)
                    .send_json(body.unwrap_or(Value::Object(Default::default()))),
                other => panic!("method {other}"),
            };
            Answer::read(res.unwrap_or_else(|e| panic!("{method} {url}: {e}")))
        })
        .await
        .unwrap()
    }

    /// `METHOD base+path` with a body of any content type.
    pub(crate) async fn call_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Answer {
        let me = self.clone();
        let (method, url) = (method.to_owned(), format!("{}{path}", self.base));
        let (content_type, body) = (content_type.to_owned(), body.to_vec());
        tokio::task::spawn_blocking(move || {
            let req = match method.as_str() {
                "POST" => me.agent.post(&url),
                "PUT" => me.agent.put(&url),
                other => panic!("method {other} with a body"),
            };
            let resp = req
                .header("Authorization", &me.auth)
                .header("Content-Type", &content_type)
                .send(&body[..])
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            Answer::read(resp)
        })
        .await
        .unwrap()
    }

    /// GET, expecting 200, the JSON body.
    pub(crate) async fn get(&self, path: &str) -> Value {
        let a = self.call("GET", path, None).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.text);
        a.json
    }

    /// A call that must answer `status` (its body is shown when it does not).
    pub(crate) async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Answer {
        let a = self.call(method, path, body).await;
        assert_eq!(a.status, status, "{method} {path}: {}", a.text);
        a
    }

    /// A write that must succeed (2xx).
    pub(crate) async fn ok(&self, method: &str, path: &str, body: Option<Value>) {
        let a = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&a.status),
            "{method} {path}: {} {}",
            a.status,
            a.text
        );
    }
}

impl Api {
    /// Creates (or updates) user `name` with `tags` (comma-separated, may be empty) and its
    /// `[configure, write, read]` permissions on vhost `/`.
    pub(crate) async fn add_user(&self, name: &str, password: &str, tags: &str, perms: [&str; 3]) {
        self.add_user_in("/", name, password, tags, perms).await;
    }

    /// [`Api::add_user`] with the permissions on vhost `vhost`.
    pub(crate) async fn add_user_in(
        &self,
        vhost: &str,
        name: &str,
        password: &str,
        tags: &str,
        perms: [&str; 3],
    ) {
        self.ok(
            "PUT",
            &format!("/api/users/{}", seg(name)),
            Some(serde_json::json!({"password": password, "tags": tags})),
        )
        .await;
        self.set_permissions(vhost, name, perms).await;
    }

    /// Sets user `name`'s `[configure, write, read]` permissions on vhost `vhost`.
    pub(crate) async fn set_permissions(&self, vhost: &str, name: &str, perms: [&str; 3]) {
        let [configure, write, read] = perms;
        self.ok(
            "PUT",
            &format!("/api/permissions/{}/{}", seg(vhost), seg(name)),
            Some(serde_json::json!({"configure": configure, "write": write, "read": read})),
        )
        .await;
    }
}

/// The RabbitMQ management API to compare with, from `LEPUS_TEST_RABBITMQ_API`
/// (`http://127.0.0.1:15672`, user `guest`/`guest`; `.ci/run` sets it), if any.
pub(crate) fn rabbitmq_api() -> Option<Api> {
    let base = std::env::var("LEPUS_TEST_RABBITMQ_API").ok()?;
    Some(Api::new(&base, "guest", "guest"))
}

/// An in-process broker with its management API on a free port, and that API as `guest`.
pub(crate) async fn broker_with_api() -> (lepus_broker::BrokerHandle, Api) {
    let broker = broker_with_management().await;
    let api = Api::new(
        &format!("http://{}", broker.management_addr().unwrap()),
        "guest",
        "guest",
    );
    (broker, api)
}

/// An in-process broker, AMQP and the management API each on a free loopback port.
pub(crate) async fn broker_with_management() -> lepus_broker::BrokerHandle {
    lepus_broker::Broker::builder()
        .listen("127.0.0.1:0")
        .management_listen("127.0.0.1:0")
        .start()
        .await
        .expect("the broker starts")
}
