//! `FsyncPolicy`: when a write counts as done (the broker's `--fsync` option).

use std::time::Duration;

/// When the store reports a record as committed, which is when the broker may send the
/// publisher confirm (`basic.ack` to the publisher) for a persistent message.
///
/// Whatever the policy, records are written with one `write` per batch, so a killed broker
/// process (SIGKILL) loses nothing that was committed: the kernel holds the bytes. The policies
/// differ in what survives a power loss or kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Commit after `fdatasync`: a confirmed message is on stable storage. Group commit makes
    /// one fsync cover every record that arrived while the previous one ran. The default.
    #[default]
    Always,
    /// Commit after `write`; fsync at most this long after a write. A power loss can lose the
    /// last interval of confirmed messages (RabbitMQ classic queues behave this way, with
    /// 200 ms).
    Interval(Duration),
    /// Commit after `write`; never fsync, leave it to the kernel's writeback. For users who
    /// only fear process crashes.
    Never,
}

/// The `--fsync` option's value was not `always`, `never` or `<milliseconds>ms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy {0:?}: expected `always`, `never` or an interval such as `200ms`")]
pub struct InvalidFsyncPolicy(String);

impl std::str::FromStr for FsyncPolicy {
    type Err = InvalidFsyncPolicy;

    /// Parses the `--fsync` option (usable as a clap `value_parser`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or_else(|| InvalidFsyncPolicy(text.to_owned()))
    }
}

impl FsyncPolicy {
    /// Parses the `--fsync` option: `always`, `never`, or an interval in milliseconds such as
    /// `200ms`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => text
                .strip_suffix("ms")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| Self::Interval(Duration::from_millis(ms))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_option_values() {
        assert_eq!(FsyncPolicy::parse("always"), Some(FsyncPolicy::Always));
        assert_eq!(FsyncPolicy::parse("never"), Some(FsyncPolicy::Never));
        assert_eq!(
            FsyncPolicy::parse("200ms"),
            Some(FsyncPolicy::Interval(Duration::from_millis(200)))
        );
        assert_eq!(FsyncPolicy::parse("0ms"), None);
        assert_eq!(FsyncPolicy::parse("sometimes"), None);
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert!("ms".parse::<FsyncPolicy>().is_err());
    }
}
