//! Lepus: typed RPC, task queues and pub/sub events over AMQP 0-9-1, with a bundled broker.
//!
//! This facade is the crate users depend on. It re-exports:
//! - [`lepus_runtime`]: connections, the client, worker pools, the codec and errors;
//! - [`lepus_macros`]: `#[lepus::rpc]` (and the task and event attributes);
//! - [`broker`]: the bundled AMQP broker, to embed in tests and examples.
//!
//! # RPC in one page
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
//! enum MathError {
//!     #[error("fib({0}) does not fit in a u64")]
//!     Overflow(u32),
//! }
//!
//! // A plain async fn: still callable locally as `fib(30).await`.
//! #[lepus::rpc(queue = "rpc_queue")]
//! async fn fib(n: u32) -> Result<u64, MathError> {
//!     if n > 93 {
//!         return Err(MathError::Overflow(n));
//!     }
//!     let (mut a, mut b) = (0u64, 1u64);
//!     for _ in 0..n {
//!         (a, b) = (b, a + b);
//!     }
//!     Ok(a)
//! }
//!
//! async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = lepus::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//!
//! // A worker process serves it...
//! let worker = lepus::Worker::new(&conn)
//!     .prefetch(1)
//!     .concurrency(8)
//!     .serve(fib::handler())
//!     .run_until(tokio::signal::ctrl_c());
//! tokio::spawn(worker);
//!
//! // ...and a caller calls it through the generated, typed stub.
//! let client = lepus::Client::new(&conn).await?;
//! let v: u64 = fib::call(&client, 30).await?;
//! let options = lepus::CallOptions::default().timeout(std::time::Duration::from_secs(2));
//! match fib::call_with(&client, 100, options).await {
//!     Err(lepus::Error::Remote(MathError::Overflow(n))) => println!("fib({n}) overflows"),
//!     other => println!("{other:?}"),
//! }
//! # let _ = v;
//! Ok(())
//! }
//! # fn main() {}
//! ```
//! Errors are one type, [`Error`]: the handler's own error comes back as
//! [`Error::Remote`], typed; timeouts, a queue nobody serves ([`Error::NoRoute`]), a lost
//! connection, a remote panic or undecodable request ([`Error::Failed`]) are distinct variants.
//! The wire format is documented in [`envelope`].
//!
//! # Layout
//! Everything lives in the workspace crates; this file maps them, and `testing` holds the
//! test helpers that need the bundled broker ([`testing::TestBed`]).

pub use lepus_macros::*;
pub use lepus_runtime::*;

/// The bundled AMQP 0-9-1 broker (`lepus-broker`), for embedding in-process.
pub use lepus_broker as broker;

pub mod testing;
