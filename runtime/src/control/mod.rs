//! The control plane: inspect the running workers, revoke tasks, shut workers down, over AMQP.
//!
//! Every worker (unless built with [`Worker::control`](crate::Worker::control)`(false)`) binds
//! an exclusive, server-named queue to the fanout exchange [`CONTROL_EXCHANGE`] and answers the
//! commands a [`Control`] client broadcasts there: `ping`, `inspect` (host, pid, uptime,
//! handlers, prefetch, concurrency, the deliveries running with their ids and start times,
//! counts by outcome), `revoke` and `shutdown`. Revocations are also kept in the durable queue
//! [`REVOKED_QUEUE`] for as long as asked, and every worker reads it before it consumes, so a
//! revoked task is skipped by workers started later too. The `lepus` command-line tool
//! (`cli/`) is built on this module.
//!
//! # Layout
//! - `message`: the wire format ([`Request`], [`Command`], [`Reply`], [`WorkerInfo`]).
//! - `registry`: a worker's own state (runs, counts, revocations, shutdown request).
//! - `listener`: the worker's control queue and its answers.
//! - `revocations`: the durable record of revocations.
//! - `client`: [`Control`].

mod client;
pub(crate) mod listener;
mod message;
pub(crate) mod registry;
pub(crate) mod revocations;

pub use client::{Control, DEFAULT_CONTROL_WAIT};
pub use message::{Command, HandlerInfo, Reply, Request, Revocation, RunningTask, WorkerInfo};
pub use revocations::REVOKED_QUEUE;

/// The fanout exchange every worker's control queue is bound to.
pub const CONTROL_EXCHANGE: &str = "lepus.control";
