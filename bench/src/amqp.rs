//! Connections, names and message bodies shared by every scenario.
//!
//! Every run gets a unique prefix (`lepus-bench-<8 hex>`) for its queues and exchanges, so runs
//! never collide on a shared RabbitMQ. A body carries, little-endian, the publish time and a
//! sequence number:
//!
//! ```text
//! offset 0..8   u64  publish time, ns since the bench's time origin (stats::now_ns)
//! offset 8..16  u64  sequence number of the message within its producer
//! offset 16..   zero padding up to --size
//! ```
//!
//! Bodies shorter than 16 bytes keep what fits; below 8 bytes no latency is measured.

use lapin::options::QueueDeleteOptions;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::error::{BenchError, Result};
use crate::stats::now_ns;

/// Refuses any URL whose host is not on the loopback network.
pub(crate) fn check_loopback(url: &str) -> Result<()> {
    let after_scheme = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| BenchError::NotLoopback(url.to_owned()))?;
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = host_port
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(host_port);
    let ok = host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
        || host == "[::1]";
    if ok {
        Ok(())
    } else {
        Err(BenchError::NotLoopback(url.to_owned()))
    }
}

/// Opens a connection named `lepus-bench <role>` (the name shows in `rabbitmqctl list_connections`).
pub(crate) async fn connect(url: &str, role: &str) -> Result<Connection> {
    let props =
        ConnectionProperties::default().with_connection_name(format!("lepus-bench {role}").into());
    Ok(Connection::connect(url, props).await?)
}

/// A fresh name prefix for this run's queues and exchanges.
pub(crate) fn run_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("lepus-bench-{}", &id[..8])
}

/// A body of `size` bytes stamped with the current time and `seq` (layout in the module doc).
pub(crate) fn stamp_body(size: usize, seq: u64) -> Vec<u8> {
    let mut body = vec![0u8; size];
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&now_ns().to_le_bytes());
    header[8..].copy_from_slice(&seq.to_le_bytes());
    let n = size.min(16);
    body[..n].copy_from_slice(&header[..n]);
    body
}

/// The publish time stamped in a body, if it holds one.
pub(crate) fn body_time(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

/// The sequence number stamped in a body, if it holds one.
pub(crate) fn body_seq(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?))
}

/// Deletes the run's queues; failures are logged, not fatal (the run's figures stand).
pub(crate) async fn delete_queues(channel: &Channel, queues: &[String]) {
    for q in queues {
        if let Err(err) = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            tracing::warn!(queue = %q, cause = %err, "queue.delete failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(check_loopback("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_loopback("amqp://127.0.0.2:5672").is_ok());
        assert!(check_loopback("amqp://localhost/%2f").is_ok());
        assert!(check_loopback("amqp://guest:guest@10.0.0.1:5672/%2f").is_err());
        assert!(check_loopback("amqp://example.com").is_err());
        assert!(check_loopback("127.0.0.1:5672").is_err());
    }

    #[test]
    fn body_round_trip() {
        let b = stamp_body(1024, 42);
        assert_eq!(b.len(), 1024);
        assert_eq!(body_seq(&b), Some(42));
        assert!(body_time(&b).is_some());
        let short = stamp_body(8, 7);
        assert_eq!(body_seq(&short), None);
        assert!(body_time(&short).is_some());
        assert_eq!(body_time(&stamp_body(4, 1)), None);
    }
}
