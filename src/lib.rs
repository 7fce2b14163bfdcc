//! Lepus: typed RPC, task queues and pub/sub events over AMQP 0-9-1, with a bundled broker.
//!
//! This facade is the crate users depend on. It re-exports:
//! - [`lepus_runtime`]: connections, the client, worker pools, the codec and errors;
//! - [`lepus_macros`]: `#[lepus::rpc]` (and the task and event attributes);
//! - [`broker`]: the bundled AMQP broker, to embed in tests and examples.
//!
//! # Layout
//! Everything lives in the workspace crates; this file maps them, and `testing` holds the
//! test helpers that need the bundled broker ([`testing::TestBed`]).

pub use lepus_macros::*;
pub use lepus_runtime::*;

/// The bundled AMQP 0-9-1 broker (`lepus-broker`), for embedding in-process.
pub use lepus_broker as broker;

pub mod testing;
