//! `lepus-macros`: the attribute macros of Lepus. Use them through the `lepus` facade.
//!
//! # Layout
//! - `rpc`: `#[lepus::rpc]`, in three steps: `rpc/parse` reads the attribute and the function,
//!   `rpc/validate` rejects what cannot be an RPC (errors at the offending token, combined),
//!   `rpc/expand` emits the items, one generator function per item.

mod rpc;

use proc_macro::TokenStream;

/// Turns an `async fn` into an RPC method served on an AMQP queue.
///
/// ```ignore
/// #[lepus::rpc(queue = "rpc_queue")]
/// async fn fib(n: u32) -> Result<u64, MathError> { ... }
/// ```
/// keeps `fib` callable locally (`fib(30).await`) and adds a module `fib` (modules live in the
/// type namespace, functions in the value namespace, so both keep the name):
/// - `fib::call(&client, 30)` and `fib::call_with(&client, 30, CallOptions)`: typed remote calls
///   returning `Result<u64, lepus::Error<MathError>>` (`lepus::Error<lepus::Never>` for a
///   function returning a plain `T`);
/// - `fib::handler()`: a `lepus::Handler` to pass to `Worker::serve`;
/// - `fib::FibRpc`: the `lepus::Method` implementation the above use, and `fib::QUEUE`,
///   `fib::METHOD`.
///
/// Attribute keys: `queue = "..."` (required), `name = "..."` (the method name; default: the
/// function's name). Several functions may share a queue; requests are routed by method name.
/// Arguments and results must be owned `Serialize + DeserializeOwned` types.
#[proc_macro_attribute]
pub fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    rpc::rpc(attr.into(), item.into()).into()
}
