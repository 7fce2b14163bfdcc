//! Lepus: typed RPC, task queues and pub/sub events over AMQP 0-9-1, with a bundled broker.
//!
//! This facade is the crate users depend on. It re-exports:
//! - [`lepus_runtime`]: connections, the client, worker pools, the codec and errors;
//! - [`lepus_macros`]: `#[lepus::service]`, `#[lepus::rpc]` (and the task and event
//!   attributes);
//! - `broker` (the `broker` feature, on by default): the bundled AMQP broker, to embed in
//!   tests and examples.
//!
//! A contract crate, a caller, or a service that talks to an external broker depends on
//! `lepus = { version = "0.1", default-features = false }`: the client, the workers and the
//! macros, without the broker (nor its HTTP and command-line dependencies).
//!
//! # A service in one page
//! The contract is a trait; callers need nothing else (no implementation, no broker):
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
//! pub enum AccountError {
//!     #[error("no account {0}")]
//!     NoSuchAccount(String),
//! }
//!
//! #[lepus::service(queue = "accounts")]
//! pub trait Accounts {
//!     /// The balance of `account`, in cents.
//!     async fn get_balance(&self, account: String) -> Result<u64, AccountError>;
//!     /// Adds `cents`; the handler sees its request's context (deadline, ids, headers).
//!     async fn deposit(
//!         &self,
//!         ctx: lepus::Context,
//!         account: String,
//!         cents: u64,
//!     ) -> Result<u64, AccountError>;
//! }
//!
//! // A server: any implementation, holding its state (a pool, a config, other clients).
//! struct Bank {
//!     balances: std::sync::Mutex<std::collections::HashMap<String, u64>>,
//! }
//!
//! impl Accounts for Bank {
//!     async fn get_balance(&self, account: String) -> Result<u64, AccountError> {
//!         let balances = self.balances.lock().unwrap_or_else(|e| e.into_inner());
//!         balances.get(&account).copied().ok_or(AccountError::NoSuchAccount(account))
//!     }
//!
//!     async fn deposit(
//!         &self,
//!         ctx: lepus::Context,
//!         account: String,
//!         cents: u64,
//!     ) -> Result<u64, AccountError> {
//!         // Calls made here would get what is left of `ctx.time_left()`.
//!         let _ = ctx.time_left();
//!         let mut balances = self.balances.lock().unwrap_or_else(|e| e.into_inner());
//!         let balance = balances.entry(account).or_default();
//!         *balance += cents;
//!         Ok(*balance)
//!     }
//! }
//!
//! async fn demo(url: &str) -> Result<(), Box<dyn std::error::Error>> {
//!     let conn = lepus::connect(url).await?;
//!     let bank = Bank { balances: Default::default() };
//!     tokio::spawn(
//!         lepus::Worker::new(&conn)
//!             .prefetch(32)
//!             .serve(AccountsServer::new(bank))
//!             .run_until(tokio::signal::ctrl_c()),
//!     );
//!
//!     // A caller.
//!     let accounts = AccountsClient::new(&lepus::Client::new(&conn).await?);
//!     accounts.deposit("alice".into(), 500).await?;
//!     assert_eq!(accounts.get_balance("alice".into()).await?, 500);
//!     match accounts.get_balance("bob".into()).await {
//!         Err(lepus::Error::Remote(AccountError::NoSuchAccount(who))) => println!("no {who}"),
//!         other => println!("{other:?}"),
//!     }
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! # State for function handlers
//! A free-function handler takes shared state as a `State<T>` parameter (any position, not
//! sent), given to the worker when it is built, as axum's `State` is:
//! ```no_run
//! #[derive(Clone)]
//! struct Rates {
//!     eur_per_usd: f64,
//! }
//!
//! #[lepus::rpc(queue = "fx")]
//! async fn to_eur(lepus::State(rates): lepus::State<Rates>, usd: f64) -> f64 {
//!     usd * rates.eur_per_usd
//! }
//!
//! async fn serve(conn: &lepus::Connection) -> lepus::Result<()> {
//!     lepus::Worker::new(conn)
//!         .state(Rates { eur_per_usd: 0.92 })
//!         .serve(to_eur::handler())
//!         .run_until(tokio::signal::ctrl_c())
//!         .await
//! }
//!
//! // In a test, without a broker: the state is a fake.
//! async fn unit_test() {
//!     let cx = lepus::Context::new().with_state(Rates { eur_per_usd: 2.0 });
//!     assert_eq!(lepus::call_local_with::<to_eur>((10.0,), cx).await.ok(), Some(20.0));
//! }
//! # fn main() {}
//! ```
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
//! test helpers ([`testing::TestBed`], on the bundled broker with the `broker` feature or on
//! any broker; the local runs `call_local`, `run_task_local`, `deliver_local`).

pub use lepus_macros::*;
pub use lepus_runtime::*;

/// The bundled AMQP 0-9-1 broker (`lepus-broker`), for embedding in-process (the `broker`
/// feature, on by default).
#[cfg(feature = "broker")]
pub use lepus_broker as broker;

pub mod testing;
