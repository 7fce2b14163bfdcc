//! The bench's one error type: what can stop a scenario before it prints its report.
//!
//! AMQP failures carry lapin's error (which holds the broker's reply code and text when the
//! broker closed a channel or the connection); the rest are our own checks.

use thiserror::Error;

/// Why a scenario could not run to its end.
#[derive(Debug, Error)]
pub(crate) enum BenchError {
    /// The client library or the broker refused an operation (reply code inside when the broker
    /// closed the channel or connection).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// `--url` names a host outside 127.0.0.0/8; the bench only ever talks to this machine.
    #[error("refusing non-loopback url {0:?}: lepus-bench only talks to 127.0.0.1")]
    NotLoopback(String),
    /// The options contradict each other (e.g. `--multi-ack` larger than `--prefetch`).
    #[error("bad options: {0}")]
    BadOptions(String),
    /// The broker published a negative confirm (`basic.nack`) for a message.
    #[error("broker nacked a publish (basic.nack)")]
    Nacked,
    /// The broker sent something the bench's own client cannot follow, or closed the
    /// connection or channel (reply code and text inside).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A socket read or write of the bench's own client failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A call or a phase did not finish in its time bound.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A spawned task panicked or was cancelled.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The Lepus framework failed a call or a worker (`rpc --impl lepus`).
    #[error("lepus: {0}")]
    Lepus(#[from] lepus::Error),
    /// Writing the report failed.
    #[error("output: {0}")]
    Output(#[from] serde_json::Error),
}

/// Shorthand used across the crate.
pub(crate) type Result<T> = std::result::Result<T, BenchError>;
