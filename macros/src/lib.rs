//! `lepus-macros`: the attribute macros of Lepus. Use them through the `lepus` facade.
//!
//! # Layout
//! - `rpc`: `#[lepus::rpc]`, in three steps: `rpc/parse` reads the attribute and the function,
//!   `rpc/validate` rejects what cannot be an RPC (errors at the offending token, combined),
//!   `rpc/expand` emits the items, one generator function per item.
//! - `task`: `#[lepus::task]` (`task/parse`, `task/expand`); `task/attr` (reading `key = value`
//!   arguments) and `task/signature` (checking the function) are shared with `event`.
//! - `event`: `#[lepus::event]` (`event/parse`, `event/expand`).
//! - `#[derive(lepus::Plain)]` (here): marks a type as a plain handler result.

mod event;
mod rpc;
mod task;

use proc_macro::TokenStream;

/// Turns an `async fn` into an RPC method served on an AMQP queue.
///
/// ```ignore
/// #[lepus::rpc(queue = "rpc_queue")]
/// async fn fib(n: u32) -> Result<u64, MathError> { ... }
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
#[proc_macro_attribute]
pub fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    rpc::rpc(attr.into(), item.into()).into()
}

/// Turns an `async fn` into a task: enqueued as a persistent message on a durable queue, run
/// at least once by a worker, retried with backoff, dead-lettered after its last attempt.
///
/// ```ignore
/// #[lepus::task(queue = "emails", retries = 5, backoff = "1s..5m", time_limit = "30s")]
/// async fn send_email(to: String, body: String) -> Result<(), SmtpError> { ... }
///
/// let id = send_email::enqueue(&client, to, body).await?;            // after the confirm
/// let id = send_email::enqueue_with(&client, to, body,
///     EnqueueOptions::new().delay(Duration::from_secs(60))).await?;
/// Worker::new(&conn).prefetch(1).serve(send_email::handler()).run_until(shutdown).await?;
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
/// ```ignore
/// #[lepus::event(exchange = "logs", kind = "topic", binding = "*.error", delivery = "pool")]
/// async fn on_error(line: LogLine) { ... }
///
/// Worker::new(&conn).serve(on_error::handler()).run_until(shutdown).await?;
/// on_error::publish(&client, "kern.error", &line).await?;   // or lepus::publish(&client, "logs", ..)
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
/// ```ignore
/// #[derive(serde::Serialize, serde::Deserialize, lepus::Plain)]
/// struct Balance { cents: u64 }
///
/// #[lepus::rpc(queue = "accounts")]
/// async fn balance(account: String) -> Balance { /* ... */ }
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
