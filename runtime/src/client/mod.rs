//! [`Client`]: makes typed RPC calls; every in-flight call shares one channel and one reply
//! consumer.
//!
//! A call encodes its arguments, registers a waiter in the correlation map (`pending`),
//! publishes the request to `lepus.rpc` on the session channel (see `reply_consumer`) and
//! awaits its waiter, which the session completes with whichever comes first: the reply, the
//! request coming back unserved through the alternate exchange (no queue took it: nobody
//! serves the queue -> [`Error::NoRoute`]), or the loss of the session
//! ([`Error::ConnectionLost`]); the deadline ([`Error::Timeout`]) is the call's own. Dropping the call's future removes its waiter; a late reply is then
//! discarded. The hot path allocates the request body, the AMQP properties and a oneshot; it
//! waits for nothing but lapin handing the frames to its I/O loop, and the reply: no publisher
//! confirm, no extra round trip.

mod call_options;
mod pending;
mod reply_consumer;

pub(crate) use reply_consumer::exclusive_queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::BasicProperties;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use call_options::CallOptions;
pub(crate) use reply_consumer::declare_exchanges;
pub use reply_consumer::ReplyMode;

use crate::connection::Connection;
use crate::context::ContextKind;
use crate::context::{write_onward, Context, Onward};
use crate::envelope::{self, CONTENT_TYPE, RPC_EXCHANGE};
use crate::error::{Error, FailureKind};
use crate::method::{Invoke, Method};
use crate::observe::{self, Outcome};
use crate::worker::handler::missing_state_message;
use crate::worker::served;
use pending::Pending;
use reply_consumer::{Session, SessionState};

/// The default call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle for making RPC calls. Cheap to clone; clones share the session, its reply
/// consumer and the default timeout. The session stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Keeps the connection alive while the client exists.
    _conn: Connection,
    /// Shared with the session task, which completes and fails the waiters.
    pending: Pending,
    /// Written by the session task; read by every call.
    session: watch::Receiver<SessionState>,
    /// Set by `close`: later calls fail with `Error::Closed`.
    closed: std::sync::atomic::AtomicBool,
    /// The default timeout in nanoseconds (changed by `set_default_timeout`).
    default_timeout_ns: AtomicU64,
    /// Prepended to every method's queue name (empty for none).
    queue_prefix: String,
    /// The session task; aborted when the last clone of the client is dropped.
    task: JoinHandle<()>,
    /// The confirm-mode channel of task enqueues and event publishes (shared by clones).
    publisher: crate::task::Publisher,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Configures a [`Client`] before its session starts.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    conn: Connection,
    timeout: Duration,
    reply_mode: ReplyMode,
    queue_prefix: String,
}

impl ClientBuilder {
    setters! {
        /// Prepends `prefix` to the queue of every call (give workers the same prefix with
        /// [`Worker::queue_prefix`](crate::Worker::queue_prefix)): separates environments or
        /// tenants sharing a broker, and tests sharing one.
        queue_prefix(prefix: impl Into<String>) => queue_prefix = prefix.into();

        /// The timeout of calls that do not set their own (default 30 s).
        timeout(timeout: Duration) => timeout = timeout;

        /// Where replies come back (default: direct reply-to when offered, else a reply queue).
        reply_mode(mode: ReplyMode) => reply_mode = mode;
    }

    /// Starts the session and waits until the reply consumer is ready.
    pub async fn build(self) -> Result<Client, Error> {
        let (state_tx, mut state_rx) = watch::channel(SessionState::Connecting);
        let pending = Pending::default();
        let task = tokio::spawn(reply_consumer::run(
            self.conn.clone(),
            self.reply_mode,
            pending.clone(),
            state_tx,
        ));
        let client = Client {
            inner: Arc::new(Inner {
                _conn: self.conn,
                pending,
                session: state_rx.clone(),
                closed: std::sync::atomic::AtomicBool::new(false),
                default_timeout_ns: AtomicU64::new(duration_ns(self.timeout)),
                queue_prefix: self.queue_prefix,
                task,
                publisher: crate::task::Publisher::default(),
            }),
        };
        wait_ready(&mut state_rx).await?;
        Ok(client)
    }
}

impl Client {
    /// A client with the default options, ready to call.
    pub async fn new(conn: &Connection) -> Result<Client, Error> {
        Client::builder(conn).build().await
    }

    /// A builder to set the default timeout or the reply mode.
    pub fn builder(conn: &Connection) -> ClientBuilder {
        ClientBuilder {
            conn: conn.clone(),
            timeout: DEFAULT_TIMEOUT,
            reply_mode: ReplyMode::default(),
            queue_prefix: String::new(),
        }
    }

    /// The timeout of calls that do not set their own.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_nanos(self.inner.default_timeout_ns.load(Ordering::Relaxed))
    }

    /// Changes the default timeout for later calls (on every clone of this client).
    pub fn set_default_timeout(&self, timeout: Duration) {
        self.inner
            .default_timeout_ns
            .store(duration_ns(timeout), Ordering::Relaxed);
    }

    /// Stops the session of this client and every clone: calls in flight fail with
    /// [`Error::Closed`], the session's channels close (`channel.close`), later calls fail.
    /// The connection stays open for others. Dropping the last clone does the same without
    /// waiting for the broker.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.task.abort();
        let session = match &*self.inner.session.borrow() {
            SessionState::Ready(session) => Some(session.clone()),
            _ => None,
        };
        self.inner.pending.fail_all(None, || Error::Closed);
        if let Some(session) = session {
            for channel in [&session.rpc_channel, &session.channel] {
                if channel.status().connected() {
                    let _ = channel.close(200, "client closed".into()).await;
                }
            }
        }
    }

    /// The number of calls waiting for their reply.
    pub fn in_flight(&self) -> usize {
        self.inner.pending.len()
    }

    /// Calls method `M` with `args` and waits for its typed result. The generated
    /// `fib::call(&client, 30)` is `client.call::<fib::FibRpc>((30,), CallOptions::default())`.
    pub async fn call<M: Method>(
        &self,
        args: M::Args,
        options: CallOptions,
    ) -> Result<M::Ok, Error<M::Err>> {
        // The call's span (a child of the caller's) and metrics, see `observe`.
        let started = std::time::Instant::now();
        let queue = self.queue_label::<M>(options.queue.as_deref());
        let span = observe::call_span(&queue, M::NAME);
        let result = self
            .call_timed::<M>(args, options)
            .instrument(span.clone())
            .await;
        let outcome = Outcome::of_call(&result);
        observe::finish(&span, outcome, started);
        observe::metrics::called(&queue, M::NAME, outcome, started.elapsed());
        result
    }

    /// The queue a call of `M` goes to, with the client's prefix, as its span and metrics
    /// name it (no copy for a method's own queue without a prefix).
    fn queue_label<M: Method>(&self, queue: Option<&str>) -> std::borrow::Cow<'static, str> {
        match (self.inner.queue_prefix.as_str(), queue) {
            ("", None) => std::borrow::Cow::Borrowed(M::QUEUE),
            (prefix, queue) => {
                std::borrow::Cow::Owned(format!("{prefix}{}", queue.unwrap_or(M::QUEUE)))
            }
        }
    }

    /// A call under its timeout.
    async fn call_timed<M: Method>(
        &self,
        args: M::Args,
        options: CallOptions,
    ) -> Result<M::Ok, Error<M::Err>> {
        let mut timeout = options.timeout.unwrap_or_else(|| self.default_timeout());
        // Inside a handler (or `Context::scope`), the call inherits what is left of the
        // handler's own deadline, and is not started once that is spent (see `context`).
        let onward = Onward::current();
        if let Some(onward) = &onward {
            match onward.bound(timeout) {
                Some(bounded) => timeout = bounded,
                None => return Err(Error::Timeout(Duration::ZERO)),
            }
        }
        match tokio::time::timeout(
            timeout,
            self.call_inner::<M>(args, options, timeout, onward.as_ref()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    async fn call_inner<M: Method>(
        &self,
        args: M::Args,
        options: CallOptions,
        timeout: Duration,
        onward: Option<&Onward>,
    ) -> Result<M::Ok, Error<M::Err>> {
        let body = envelope::encode_request(&args).map_err(Error::Encode)?;
        let queue = self
            .routing_key(options.queue.as_deref().unwrap_or(M::QUEUE))
            .map_err(Error::widen)?;
        // `#[lepus::rpc]` rejects a `name` over 255 bytes; a longer function name is refused here.
        let method = ShortString::try_new(M::NAME).map_err(|_| {
            Error::Config(format!("method name {} is longer than 255 bytes", M::NAME))
        })?;
        // A call from a handler to a method of its own worker runs in place: through the broker
        // it could wait for a slot the caller itself holds (see `worker/served`).
        match served::here(&self.inner._conn, queue.as_str(), M::NAME) {
            served::Here::Elsewhere => {}
            served::Here::Run(handler) => {
                let cx = Context::in_place(
                    M::NAME,
                    queue.as_str(),
                    tokio::time::Instant::now() + timeout,
                    onward.and_then(Onward::trace_id),
                    handler.states().clone(),
                );
                let ran = handler.dispatch(body, cx).await;
                return envelope::decode_reply_with::<M::Ok, M::Err>(&ran.reply, &M::err_codec());
            }
            served::Here::UnknownMethod => {
                return Err(Error::Failed {
                    kind: FailureKind::UnknownMethod,
                    message: format!(
                        "no handler for method {:?} on queue {queue}, which the worker running \
                         this handler serves (a call from a handler to its own worker is run in \
                         place, so it cannot wait for a slot the caller holds)",
                        M::NAME
                    ),
                })
            }
        }
        let session = self.session().await.map_err(Error::widen)?;
        let (id, reply, forget_on_drop) = self.inner.pending.register(session.generation);

        let deadline_ms = envelope::deadline_after(timeout);
        let correlation_id = envelope::correlation_id(id);
        tracing::Span::current().record("correlation_id", correlation_id.as_str());
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_correlation_id(correlation_id)
            .with_reply_to(session.reply_to.clone())
            .with_expiration(envelope::expiration(timeout))
            .with_delivery_mode(1)
            .with_type(method)
            .with_headers(request_headers(deadline_ms, &session.caller, onward));
        if let Some(priority) = options.priority {
            properties = properties.with_priority(priority);
        }
        // The returned `PublisherConfirm` is dropped unawaited: outside confirm mode it is
        // already resolved (`NotRequested`) and lapin discards it on drop, whereas awaiting it
        // arms an event listener (two allocations per call). Not `mandatory`: an unserved
        // request comes back through the session's bounce queue (see `reply_consumer`).
        session
            .rpc_channel
            .basic_publish(
                RPC_EXCHANGE.into(),
                queue,
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .map_err(|err| lost_or_transport(&session, err))?;
        drop(body);
        let outcome = reply.await;
        forget_on_drop.settled();
        match outcome {
            Ok(Ok(body)) => envelope::decode_reply_with::<M::Ok, M::Err>(&body, &M::err_codec()),
            Ok(Err(err)) => Err(err.widen()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// The routing key of a request to `queue`: the queue with this client's prefix.
    fn routing_key(&self, queue: &str) -> Result<ShortString, Error> {
        let prefix = &self.inner.queue_prefix;
        let mut name = String::with_capacity(prefix.len() + queue.len());
        name.push_str(prefix);
        name.push_str(queue);
        ShortString::try_new(name).map_err(|_| {
            Error::Config(format!(
                "queue name {prefix}{queue} is longer than 255 bytes (AMQP short string)"
            ))
        })
    }

    /// The queue prefix of this client (empty for none).
    pub(crate) fn queue_prefix(&self) -> &str {
        &self.inner.queue_prefix
    }

    /// The publishing state of task enqueues and event publishes.
    pub(crate) fn publisher(&self) -> &crate::task::Publisher {
        &self.inner.publisher
    }

    /// The exchanges and queues task enqueues and event publishes declared.
    pub(crate) fn declared(&self) -> &crate::task::Declared {
        self.inner.publisher.declared()
    }

    /// The current session, waiting (within the caller's timeout) while reconnecting.
    pub(crate) async fn session(&self) -> Result<Arc<Session>, Error> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if let SessionState::Ready(session) = &*self.inner.session.borrow() {
            return Ok(session.clone());
        }
        let mut rx = self.inner.session.clone();
        wait_ready(&mut rx).await
    }
}

/// The headers of a request: the deadline and the caller, the trace context, and inside a
/// context what it carries onward (the trace id).
fn request_headers(
    deadline_ms: i64,
    caller: &lapin::types::LongString,
    onward: Option<&Onward>,
) -> lapin::types::FieldTable {
    let mut headers = envelope::request_headers(deadline_ms, caller);
    write_onward(&mut headers, onward);
    headers
}

/// Waits for `SessionState::Ready`.
async fn wait_ready(rx: &mut watch::Receiver<SessionState>) -> Result<Arc<Session>, Error> {
    loop {
        match &*rx.borrow_and_update() {
            SessionState::Ready(session) => return Ok(session.clone()),
            SessionState::Closed => return Err(Error::Closed),
            SessionState::Connecting => {}
        }
        if rx.changed().await.is_err() {
            return Err(Error::Closed);
        }
    }
}

/// A lapin error on the session: `ConnectionLost` when the connection is gone, else transport.
fn lost_or_transport<E>(session: &Session, err: lapin::Error) -> Error<E> {
    if session.conn.status().connected() && session.rpc_channel.status().connected() {
        Error::Transport(err)
    } else {
        Error::ConnectionLost
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Calls method `M` in this process, without a broker, as a worker would run it for a caller:
/// the arguments and the result go through MessagePack, the handler's `Err` comes back as
/// [`Error::Remote`], a panic as [`Error::Failed`]. See `lepus::testing`; a method that takes
/// `State<T>` needs [`call_local_with`].
pub async fn call_local<M: Invoke<()>>(args: M::Args) -> Result<M::Ok, Error<M::Err>> {
    call_local_with::<M>(args, Context::new()).await
}

/// [`call_local`] inside `cx`: the context the method sees (its deadline, ids, headers) and
/// the states its `State<T>` parameters take (`Context::new().with_state(fake_db)`). A state
/// the method needs and `cx` lacks is [`Error::Config`], as a worker would refuse to start.
pub async fn call_local_with<M: Invoke<()>>(
    args: M::Args,
    cx: Context,
) -> Result<M::Ok, Error<M::Err>> {
    let body = envelope::encode_request(&args).map_err(Error::Encode)?;
    if let Some(missing) = cx.states().first_missing(&M::needs()) {
        return Err(Error::Config(missing_state_message(
            M::NAME,
            missing.type_name(),
        )));
    }
    let cx = cx.into_run_of(ContextKind::Call, M::NAME, M::QUEUE);
    let ran = crate::worker::Handler::new::<M>().dispatch(body, cx).await;
    envelope::decode_reply_with::<M::Ok, M::Err>(&ran.reply, &M::err_codec())
}
