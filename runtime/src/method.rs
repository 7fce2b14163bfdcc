//! [`Method`]: the static description of one RPC method, and [`Invoke`]: how a worker runs it.
//!
//! `#[lepus::rpc]` turns `async fn fib(n: u32) -> Result<u64, MathError>` into a marker type
//! that implements both; `#[lepus::service]` makes one marker per trait method. The client
//! ([`crate::Client::call`]) needs only [`Method`], so a caller compiles against a contract
//! without any implementation; the worker ([`crate::Handler::new`]) needs [`Invoke`] too.

use std::future::Future;
use std::pin::Pin;

use serde::{de::DeserializeOwned, Serialize};

use crate::context::Context;
use crate::remote_error::ErrCodec;
use crate::state::{MissingState, Needed};

/// A boxed, sendable future: what a handler returns to the worker.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One RPC method: where it is served, what it takes and what it returns.
pub trait Method: Send + Sync + 'static {
    /// The queue the method is served on (the routing key of its requests).
    const QUEUE: &'static str;
    /// The method name, sent in the `type` property of each request.
    const NAME: &'static str;
    /// The arguments as a tuple (`(u32,)`; `[(); 0]` for none), encoded as a MessagePack array.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The success type.
    type Ok: Serialize + DeserializeOwned + Send + 'static;
    /// The application error type ([`crate::Never`] when the function returns a plain `T`);
    /// how it travels is [`Method::err_codec`].
    type Err: Send + 'static;

    /// How [`Method::Err`] is put in a reply and read back (see `remote_error`): typed for
    /// serde types, as text for `anyhow::Error`, `io::Error` and the like.
    fn err_codec() -> impl ErrCodec<Self::Err>;

    /// A one-line description of an application error, for logs and test observers.
    fn describe_err(err: &Self::Err) -> String;
}

/// How a worker runs method `M` on the implementation held in `R`: `()` for a free function
/// (`#[lepus::rpc]`), `Arc<S>` for a service implementation `S` (`#[lepus::service]`).
pub trait Invoke<R>: Method {
    /// The states the implementation's `State<T>` parameters need (checked when a worker
    /// starts).
    fn needs() -> Vec<Needed> {
        Vec::new()
    }

    /// Starts one run with decoded arguments, the request's context and the injected
    /// parameters taken from it (a missing state is the only way this fails).
    fn invoke(
        receiver: &R,
        args: Self::Args,
        cx: &Context,
    ) -> Result<impl Future<Output = Result<Self::Ok, Self::Err>> + Send + 'static, MissingState>;
}
