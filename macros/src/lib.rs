//! `lepus-macros`: the attribute macros of Lepus. Use them through the `lepus` facade.
//!
//! # Layout
//! Each attribute runs parse -> validate -> expand:
//! - `signature` (shared): checks a handler's signature (errors at the offending token,
//!   combined) and splits its parameters into wire arguments and injected ones (`State<T>`,
//!   `Context`);
//! - `generate` (shared): the generator helpers every expansion uses (marker struct, argument
//!   tuple, wire checks, error codec, injection);
//! - `rpc`: `#[lepus::rpc]`: `rpc/parse` reads the attribute (and holds `QueueName` and the
//!   error accumulator all attributes use), `rpc/expand` emits the items, one generator
//!   function per item;
//! - `service`: `#[lepus::service]` on a trait (`service/parse`, `service/expand`);
//! - `task`: `#[lepus::task]` (`task/parse`, `task/expand`); `task/attr` (reading `key = value`
//!   arguments) is shared with `event` and `service`;
//! - `event`: `#[lepus::event]` (`event/parse`, `event/expand`).
//! - `#[derive(lepus::Plain)]` (here): marks a type as a plain handler result.

mod event;
mod generate;
mod rpc;
mod service;
mod signature;
mod task;

use proc_macro::TokenStream;

/// Turns an `async fn` into an RPC method served on an AMQP queue.
///
/// ```no_run
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("overflow")]
/// # struct MathError;
/// #[lepus::rpc(queue = "rpc_queue")]
/// async fn fib(n: u32) -> Result<u64, MathError> {
///     // ...
/// #   Ok(u64::from(n))
/// }
///
/// # async fn demo(conn: &lepus::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let client = lepus::Client::new(conn).await?;
/// let n: u64 = fib::call(&client, 30).await?; // Err(lepus::Error::Remote(MathError)) on failure
/// assert_eq!(fib(30).await?, n); // still a plain local function
/// lepus::Worker::new(conn).serve(fib::handler()).run_until(tokio::signal::ctrl_c()).await?;
/// # Ok(())
/// # }
/// ```
/// keeps `fib` callable locally (`fib(30).await`) and adds a struct `fib` with no fields (structs
/// with braces live in the type namespace only, functions in the value namespace, so both keep
/// the name), declared next to the function (also inside a function body):
/// - `fib::call(&client, 30)` and `fib::call_with(&client, 30, CallOptions)`: typed remote calls
///   returning `Result<u64, lepus::Error<MathError>>` (`lepus::Error<lepus::Never>` for a
///   function returning a plain `T`);
/// - `fib::handler()`: a `lepus::Handler` to pass to `Worker::serve`;
/// - `fib::QUEUE`, `fib::METHOD`; `fib` itself implements `lepus::Method`.
///
/// The function returns `Result<T, E>` or any alias of it (`anyhow::Result<T>`, `io::Result<T>`,
/// ...; its `Err` reaches the caller as `lepus::Error::Remote(e)`), or a plain value (a
/// `lepus::Plain` type). The type system decides which (`lepus::Returns`), not the spelling of
/// the path. `E` travels typed when it is a serde type, else as its text (`anyhow::Error`,
/// `io::Error`, `Box<dyn Error + Send + Sync>`: rebuilt on the caller's side).
///
/// Attribute keys: `queue = ...` (required: a string literal or a `&'static str` constant
/// expression such as a `const`), `name = "..."` (the method name; default: the function's
/// name), `time_limit = "5s"` (the handler is stopped after that long and the caller gets a
/// time-limit failure; it is stopped at the caller's deadline in any case), `blocking = true`
/// (run on tokio's blocking pool: for handlers that block their thread). Several functions may
/// share a queue; requests are routed by method name. Arguments and results must be owned
/// `Serialize + DeserializeOwned` types. At run time a worker may
/// serve the method on another queue (`fib::handler().on_queue(..)`) and a caller call it there
/// (`CallOptions::queue`).
///
/// Parameters typed `State<T>` (shared state given to the worker: `Worker::state(pool)`) and
/// `Context` or `&Context` (the request's deadline, ids and headers) are filled in by the
/// worker, in any position; they are not sent, and the stubs do not take them.
#[proc_macro_attribute]
pub fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    rpc::rpc(attr.into(), item.into()).into()
}

/// Turns a trait into a service contract: a typed client that needs only the trait, and a
/// server for any implementation of it.
///
/// ```no_run
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// # #[error("no such account")]
/// # pub struct AccountError;
/// # type Pool = std::sync::Mutex<std::collections::HashMap<String, u64>>;
/// #[lepus::service(queue = "accounts")]
/// pub trait Accounts {
///     async fn get_balance(&self, account: String) -> Result<u64, AccountError>;
///     async fn deposit(
///         &self,
///         ctx: lepus::Context,
///         account: String,
///         cents: u64,
///     ) -> Result<u64, AccountError>;
/// }
///
/// // Server: any implementation, holding its state.
/// struct Bank {
///     db: Pool,
/// }
///
/// impl Accounts for Bank {
///     async fn get_balance(&self, account: String) -> Result<u64, AccountError> {
///         let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
///         db.get(&account).copied().ok_or(AccountError)
///     }
///
///     async fn deposit(
///         &self,
///         _ctx: lepus::Context,
///         account: String,
///         cents: u64,
///     ) -> Result<u64, AccountError> {
///         let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
///         let balance = db.entry(account).or_default();
///         *balance += cents;
///         Ok(*balance)
///     }
/// }
///
/// # async fn demo(conn: &lepus::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// // Caller: needs the contract only.
/// let accounts = AccountsClient::new(&lepus::Client::new(conn).await?);
/// let cents: u64 = accounts.get_balance("alice".into()).await?; // Err(lepus::Error<AccountError>)
///
/// let bank = Bank { db: Pool::default() };
/// lepus::Worker::new(conn)
///     .serve(AccountsServer::new(bank))
///     .run_until(tokio::signal::ctrl_c())
///     .await?;
/// # let _ = cents;
/// # Ok(())
/// # }
/// ```
/// Generates `AccountsClient` (`new(&Client)`, `with_options(CallOptions)`, one `async fn` per
/// method), `AccountsServer<S: Accounts>` (`new(S)`, `from_arc(Arc<S>)`, `on_queue(..)`; give it
/// to `Worker::serve`), and a hidden marker per method (`Accounts_get_balance`, the
/// `lepus::Method` its client calls). The trait's methods become `fn .. -> impl Future + Send`
/// and the trait `Send + Sync + 'static`; implementations still write `async fn`.
///
/// Each method is an RPC exactly as `#[lepus::rpc(queue = "accounts")] async fn
/// get_balance(account: String) -> Result<u64, AccountError>` would be: same routing (the
/// `type` property is the method name), errors, timeouts, `NoRoute`, reconnect and wire format,
/// so the two forms interoperate. Methods are `async fn` taking `&self` and owned
/// `Serialize + DeserializeOwned` arguments; a `Context` (or `&Context`) parameter is filled in
/// by the worker and not sent; no bodies, no generics, no two methods of one name.
/// `#[lepus(name = "...")]` on a method sets its name on the wire. Declare the trait at module
/// level (the generated items sit next to it).
///
/// Limits, as `#[lepus::rpc]`'s: `time_limit = "5s"` (the handler is stopped after that long
/// and the caller gets a time-limit failure; it is stopped at the caller's deadline in any
/// case) and `blocking = true` (run on tokio's blocking pool: for methods that block their
/// thread), on the service (every method) or on a method (`#[lepus(time_limit = "30s")]`,
/// replacing the service's for that method).
///
/// Each misuse's compile error is a case of `tests/service_macro_ui.rs`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::service(attr.into(), item.into()).into()
}

/// Turns an `async fn` into a task: enqueued as a persistent message on a durable queue, run
/// at least once by a worker, retried with backoff, dead-lettered after its last attempt.
///
/// ```no_run
/// # use std::time::Duration;
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("smtp")]
/// # struct SmtpError;
/// #[lepus::task(queue = "emails", retries = 5, backoff = "1s..5m", time_limit = "30s")]
/// async fn send_email(to: String, body: String) -> Result<(), SmtpError> {
///     // ...
/// #   let _ = (to, body);
/// #   Ok(())
/// }
///
/// # async fn demo(conn: &lepus::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// # let (to, body) = (String::new(), String::new());
/// let client = lepus::Client::new(conn).await?;
/// // Returns once the broker has confirmed the (persistent) message.
/// let id = send_email::enqueue(&client, to.clone(), body.clone()).await?;
/// let later = lepus::EnqueueOptions::new().delay(Duration::from_secs(60));
/// let id2 = send_email::enqueue_with(&client, to, body, later).await?;
/// lepus::Worker::new(conn)
///     .prefetch(1)
///     .serve(send_email::handler())
///     .run_until(tokio::signal::ctrl_c())
///     .await?;
/// # let _ = (id, id2);
/// # Ok(())
/// # }
/// ```
/// Keys: `queue` (required), `name` (default: the function's name), `retries` (default 3),
/// `backoff = "<first>..<max>"` (default `"1s..300s"`), `time_limit` (a duration string),
/// `max_priority` (declares the queue with priorities), `dead_letter_queue` (default
/// `"<queue>.dead"`), `quorum = true`, `blocking = true` (run on tokio's blocking pool: for
/// functions that block their thread; the time limit still counts wall time); `queue` may be a
/// `&'static str` constant expression. The function returns `Result<T, E>` with `E: Display` or
/// any alias of it (`anyhow::Result<()>`, `io::Result<()>`, `eyre::Result<()>`, your own), or a
/// plain value (`()`, any `lepus::Plain` type). An `Err`, a panic or the time limit fail the
/// attempt.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    task::task(attr.into(), item.into()).into()
}

/// Turns an `async fn` taking one payload into an event handler bound to an exchange.
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct LogLine(String);
/// #[lepus::event(exchange = "logs", kind = "topic", binding = "*.error", delivery = "pool")]
/// async fn on_error(line: LogLine) {
///     // ...
/// #   let _ = line;
/// }
///
/// # async fn demo(conn: &lepus::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let client = lepus::Client::new(conn).await?;
/// let line = LogLine("disk full".into());
/// on_error::publish(&client, "kern.error", &line).await?; // or lepus::publish(&client, "logs", ..)
/// lepus::Worker::new(conn)
///     .serve(on_error::handler())
///     .run_until(tokio::signal::ctrl_c())
///     .await?;
/// # Ok(())
/// # }
/// ```
/// Keys: `exchange` and `kind` (`"fanout"`, `"direct"`, `"topic"`) required; `binding` (a key
/// or an array of keys; required for direct and topic); `delivery = "pool"` (default: one
/// durable queue per handler shared by all instances) or `"broadcast"` (one exclusive queue per
/// running instance); `queue` (default `"<exchange>.<fn>"`); `name`; `time_limit` (the event is
/// rejected when the handler runs longer); `blocking = true` (run on tokio's blocking pool).
#[proc_macro_attribute]
pub fn event(attr: TokenStream, item: TokenStream) -> TokenStream {
    event::event(attr.into(), item.into()).into()
}

/// Marks a type as a plain handler result: returned as it is, never a failure (implements
/// `lepus::Plain`, which has no items). Needed for your own types that `#[lepus::rpc]`,
/// `#[lepus::task]` or `#[lepus::event]` functions return without a `Result`.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, lepus::Plain)]
/// struct Balance {
///     cents: u64,
/// }
///
/// #[lepus::rpc(queue = "accounts")]
/// async fn balance(account: String) -> Balance {
///     // ...
/// #   let _ = account;
/// #   Balance { cents: 0 }
/// }
/// ```
#[proc_macro_derive(Plain)]
pub fn derive_plain(item: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(item as syn::DeriveInput);
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote::quote! {
        impl #impl_generics ::lepus::Plain for #name #ty_generics #where_clause {}
    }
    .into()
}
