//! The control plane's wire format: what a [`Control`](crate::control::Control) client
//! broadcasts on [`CONTROL_EXCHANGE`](crate::control::CONTROL_EXCHANGE) and what each worker
//! answers.
//!
//! # Layout of a request
//! A `basic.publish` to the fanout exchange `lepus.control` (routing key empty) with:
//! 1. `reply_to`: the queue the answers go to (the client's exclusive, server-named queue);
//! 2. `correlation_id`: copied onto every answer;
//! 3. `content_type`: `application/msgpack`;
//! 4. body: a [`Request`] as a MessagePack map (field names kept, so that other tools and later
//!    versions can read it; unknown fields are ignored).
//!
//! Each worker answers on the default exchange with routing key `reply_to`: a [`Reply`] map.
//! Requests and answers are transient (`delivery_mode` 1); nothing waits for a worker that is
//! not running. Revocations are also kept in the durable queue `lepus.revoked`
//! (`revocations`), one [`Revocation`] per message.

use serde::{Deserialize, Serialize};

/// A command for the workers (all of them, or those named in `destination`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The worker ids that should act on it; `None`: every worker.
    #[serde(default)]
    pub destination: Option<Vec<String>>,
    /// What to do.
    pub command: Command,
}

/// The commands workers answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Answer [`Reply::Pong`].
    Ping,
    /// Answer [`Reply::Info`] with what the worker runs now.
    Inspect,
    /// Skip the task (and cancel it where it runs and opted in); answer [`Reply::Revoked`].
    Revoke(Revocation),
    /// Stop consuming and drain gracefully; answer [`Reply::ShuttingDown`].
    Shutdown,
}

/// One revoked task: its id (the `message_id`) and until when the revocation holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The task's `message_id` ([`TaskId`](crate::TaskId)).
    pub task_id: String,
    /// Unix time in milliseconds after which the revocation is forgotten.
    pub expires_at_ms: i64,
}

/// A worker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The answer to `ping`.
    Pong {
        /// The worker's id.
        worker: String,
    },
    /// The answer to `inspect`.
    Info(WorkerInfo),
    /// The answer to `revoke`.
    Revoked {
        /// The worker's id.
        worker: String,
        /// True when the task was running on this worker and was cancelled.
        cancelled: bool,
        /// True when the task was running on this worker but did not opt in to cancellation
        /// (it runs to its end; a later delivery of it is skipped).
        running: bool,
    },
    /// The answer to `shutdown`: the worker stops consuming and drains.
    ShuttingDown {
        /// The worker's id.
        worker: String,
    },
}

/// What one worker says about itself (`inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id: `<host>:<pid>:<n>` (n counts the workers of the process from 1).
    pub worker: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// Milliseconds since the worker started.
    pub uptime_ms: u64,
    /// The handlers it serves.
    pub handlers: Vec<HandlerInfo>,
    /// Its `basic.qos` prefetch count per consumer.
    pub prefetch: u16,
    /// How many handlers it runs at once.
    pub concurrency: usize,
    /// What runs now.
    pub running: Vec<RunningTask>,
    /// Settled deliveries by outcome (`succeeded`, `retried`, `dead_lettered`, `failed`,
    /// `unsettled`, `revoked`) since the worker started.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// How many revocations the worker holds.
    pub revoked: usize,
}

/// One served handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerInfo {
    /// Its queue (with the worker's prefix).
    pub queue: String,
    /// The method, task or event name.
    pub name: String,
    /// `call`, `task` or `event`.
    pub kind: String,
}

/// One delivery a worker runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    /// The task id (`message_id`), or the call's `correlation_id`.
    pub id: Option<String>,
    /// The method, task or event name.
    pub name: String,
    /// The queue it came from.
    pub queue: String,
    /// `call`, `task` or `event`.
    pub kind: String,
    /// Unix time in milliseconds when it started.
    pub started_at_ms: i64,
    /// True when a revocation stops it.
    pub cancellable: bool,
}

/// Encodes a control message (a MessagePack map).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes a control message, refusing bodies nested deeper than the runtime's bound.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    crate::envelope::decode_request::<T>(body).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_named_maps() {
        for command in [
            Command::Ping,
            Command::Inspect,
            Command::Shutdown,
            Command::Revoke(Revocation {
                task_id: "t1".into(),
                expires_at_ms: 42,
            }),
        ] {
            let request = Request {
                destination: Some(vec!["h:1:1".into()]),
                command,
            };
            let body = encode(&request).unwrap();
            assert_eq!(decode::<Request>(&body).unwrap(), request);
        }
        // Field names are on the wire (other tools can read it).
        let body = encode(&Request {
            destination: None,
            command: Command::Ping,
        })
        .unwrap();
        assert!(body.windows(7).any(|w| w == b"command"));
    }
}
