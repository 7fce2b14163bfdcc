//! A user's permissions in one vhost: three regular expressions, for configure, write and
//! read, matched against resource names as RabbitMQ's internal auth backend matches them.
//!
//! Matching rules (rabbit_auth_backend_internal): the regex is *not* anchored (`"^amq\."` must
//! anchor itself; `".*"` grants everything); an empty regex grants nothing; the default
//! exchange `""` is checked under the name `amq.default`.

use regex::Regex;

/// The three kinds of access a method can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// Create or destroy the resource, or change how it behaves.
    Configure,
    /// Inject messages into it (publish to an exchange, bind a queue as destination).
    Write,
    /// Take messages out of it (consume, get, purge, bind an exchange as source).
    Read,
}

impl Access {
    /// RabbitMQ's word for it, used in refusal texts.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

/// The kind of resource an access is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ResourceKind {
    /// An exchange.
    Exchange,
    /// A queue.
    Queue,
}

impl ResourceKind {
    /// RabbitMQ's word for it, used in refusal texts.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Exchange => "exchange",
            Self::Queue => "queue",
        }
    }
}

/// A user's compiled permissions in one vhost.
#[derive(Debug, Clone)]
pub(crate) struct Permission {
    /// The configure regex as given.
    pub(crate) configure: String,
    /// The write regex as given.
    pub(crate) write: String,
    /// The read regex as given.
    pub(crate) read: String,
    /// Compiled configure, write, read (`None` for an empty regex, which grants nothing).
    compiled: [Option<Regex>; 3],
}

impl Permission {
    /// Compiles the three regexes; the error names the one that does not compile.
    pub(crate) fn new(configure: &str, write: &str, read: &str) -> Result<Self, String> {
        let compile = |what: &str, re: &str| -> Result<Option<Regex>, String> {
            if re.is_empty() {
                return Ok(None);
            }
            Regex::new(re)
                .map(Some)
                .map_err(|e| format!("invalid {what} regex '{re}': {e}"))
        };
        Ok(Self {
            compiled: [
                compile("configure", configure)?,
                compile("write", write)?,
                compile("read", read)?,
            ],
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        })
    }

    /// True when `access` to a resource named `name` is granted.
    pub(crate) fn allows(&self, access: Access, kind: ResourceKind, name: &str) -> bool {
        let name = if kind == ResourceKind::Exchange && name.is_empty() {
            "amq.default"
        } else {
            name
        };
        let re = match access {
            Access::Configure => &self.compiled[0],
            Access::Write => &self.compiled[1],
            Access::Read => &self.compiled[2],
        };
        re.as_ref().is_some_and(|re| re.is_match(name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_empty_denies_default_exchange_renamed() {
        let p = Permission::new("^app\\.", "", "q").unwrap();
        assert!(p.allows(Access::Configure, ResourceKind::Queue, "app.jobs"));
        assert!(!p.allows(Access::Configure, ResourceKind::Queue, "my.app.jobs"));
        assert!(!p.allows(Access::Write, ResourceKind::Exchange, "anything"));
        // Not anchored: "q" matches anywhere in the name.
        assert!(p.allows(Access::Read, ResourceKind::Queue, "a-q-b"));
        let d = Permission::new("", "^amq\\.default$", "").unwrap();
        assert!(d.allows(Access::Write, ResourceKind::Exchange, ""));
        assert!(!d.allows(Access::Write, ResourceKind::Queue, ""));
        assert!(Permission::new("(", ".*", ".*").is_err());
    }
}
