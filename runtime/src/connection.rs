//! [`Connection`]: one supervised AMQP connection shared by clients and workers.
//!
//! A supervisor task owns the `lapin::Connection`. It publishes the current link on a
//! `watch` channel: `Up(link)` with a generation number that grows at every (re)connection,
//! `Down` while the broker is unreachable, `Closed` once the owner closed it. Clients and workers
//! subscribe, build their channels and consumers on each new generation (redeclaring their
//! topology), and fail what was in flight on the old one. On loss the supervisor reconnects with
//! [`Backoff`], trying the configured URLs in turn (one today; several for failover).
//!
//! lapin's own `auto_recover` is left off: recovery here is explicit so that each client and
//! worker knows exactly when its channels died and can tell its callers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::ConnectionProperties;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// How often the supervisor checks the connection state besides lapin's error events (a
/// broker-initiated `connection.close` raises no event in lapin 4).
const STATUS_POLL: Duration = Duration::from_millis(50);

/// How long [`Connection::close`] waits for the broker's `connection.close-ok`.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`connect`] keeps trying a broker that does not answer yet (one that is still
/// starting, say) before it gives up; see [`ConnectOptions::startup_wait`].
pub const DEFAULT_STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Connects to `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`) with default options:
/// waits up to [`DEFAULT_STARTUP_WAIT`] for a broker that is not reachable yet.
pub async fn connect(url: &str) -> Result<Connection> {
    ConnectOptions::new(url).connect().await
}

/// How to reach the broker, and how to come back when it goes away.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Broker URLs, tried in order on each (re)connection attempt.
    urls: Vec<String>,
    backoff: Backoff,
    connection_name: Option<String>,
    connect_timeout: Duration,
    startup_wait: Duration,
}

impl ConnectOptions {
    /// Options for one broker URL.
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            urls: vec![url.into()],
            backoff: Backoff::default(),
            connection_name: None,
            connect_timeout: Duration::from_secs(10),
            startup_wait: DEFAULT_STARTUP_WAIT,
        }
    }

    /// Adds a further broker URL: on a connection failure the next URL is tried.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    setters! {
        /// The wait between reconnection attempts (default 100 ms doubling to 5 s, jittered).
        backoff(backoff: Backoff) => backoff = backoff;

        /// A name shown by the broker for this connection (`connection_name` client property).
        connection_name(name: impl Into<String>) => connection_name = Some(name.into());

        /// How long one connection attempt (TCP + AMQP handshake) may take (default 10 s).
        connect_timeout(timeout: Duration) => connect_timeout = timeout;

        /// How long [`ConnectOptions::connect`] keeps trying (with the backoff) while no broker
        /// answers: a service that starts with its broker, or just before it, waits for it instead
        /// of failing. Default [`DEFAULT_STARTUP_WAIT`]; `Duration::ZERO` tries each URL once. A
        /// broker that answers and refuses (bad credentials, unknown vhost) fails at once.
        startup_wait(wait: Duration) => startup_wait = wait;
    }

    /// Connects to the first URL that answers, waiting up to the startup wait for one to come
    /// up, then keeps the connection up in the background.
    pub async fn connect(self) -> Result<Connection> {
        if self.urls.is_empty() {
            return Err(Error::Config("no broker URL given".into()));
        }
        let (first, url_index) = self.connect_first().await?;
        let options = self.clone();
        let (blocked_tx, blocked) = watch::channel(false);
        let (link_tx, _) = watch::channel(LinkState::Up(Link {
            conn: Arc::new(first),
            generation: 1,
            blocked,
        }));
        let (close_tx, close_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            link: link_tx,
            close: close_tx,
        });
        let urls = self.urls.clone();
        let supervisor = tokio::spawn(supervise(
            self,
            shared.clone(),
            close_rx,
            url_index,
            blocked_tx,
        ));
        Ok(Connection {
            owner: Arc::new(Owner {
                shared,
                urls,
                supervisor: std::sync::Mutex::new(Some(supervisor)),
                options,
            }),
        })
    }
}

/// A supervised connection to the broker. Cheap to clone; the connection closes when the last
/// clone (including those held by clients and workers) is dropped, or on [`Connection::close`].
#[derive(Debug, Clone)]
pub struct Connection {
    /// Shared by every clone; its `Drop` tells the supervisor to close the AMQP connection.
    owner: Arc<Owner>,
}

#[derive(Debug)]
struct Owner {
    shared: Arc<Shared>,
    /// The broker URLs this connection uses (see `same_broker`).
    urls: Vec<String>,
    /// The supervisor task; taken by `close` to wait for it. Dropping it detaches the task,
    /// which still stops because `Owner::drop` signals `close`.
    supervisor: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// How this connection was made, for [`Connection::sibling`].
    options: ConnectOptions,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close.send_replace(true);
    }
}

/// State shared between the supervisor (writer) and every subscriber.
#[derive(Debug)]
struct Shared {
    /// Written by the supervisor only; read by clients and workers through `subscribe`.
    link: watch::Sender<LinkState>,
    /// Set to `true` once by `close` or by the last handle's drop; read by the supervisor.
    close: watch::Sender<bool>,
}

/// What the supervisor currently offers.
#[derive(Debug, Clone)]
pub(crate) enum LinkState {
    /// Connected; build channels on `Link::conn`.
    Up(Link),
    /// Lost; the supervisor is reconnecting.
    Down,
    /// Closed by its owner; nothing more will come.
    Closed,
}

/// One established AMQP connection and its generation (1 for the first, +1 per reconnection).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) conn: Arc<lapin::Connection>,
    pub(crate) generation: u64,
    /// True while the broker blocks this connection (`connection.blocked`: lapin then writes
    /// nothing on it). The sender is the supervisor, the one listener of the connection's
    /// events (lapin hands each event to one listener only).
    pub(crate) blocked: watch::Receiver<bool>,
}

impl Connection {
    /// True while an AMQP connection is established.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.owner.shared.link.borrow(), LinkState::Up(link) if link.conn.status().connected())
    }

    /// How many times the connection has been established (1 before any reconnection).
    pub fn generation(&self) -> u64 {
        match &*self.owner.shared.link.borrow() {
            LinkState::Up(link) => link.generation,
            _ => 0,
        }
    }

    /// Closes the AMQP connection (`connection.close`) and stops reconnecting. Clients and
    /// workers on this connection end; calls in flight fail with [`Error::Closed`]. Waits at
    /// most 5 s for the broker to confirm (a blocked connection never does).
    pub async fn close(&self) {
        self.owner.shared.close.send_replace(true);
        let supervisor = match self.owner.supervisor.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }

    /// A second connection to the same brokers, with the same options, supervised on its own
    /// (`role` is appended to the connection name). Workers publish on one: a broker blocks a
    /// connection that publishes while its memory alarm is raised (`connection.blocked`), and
    /// stops reading it, which would stall the acks of the deliveries it consumes. The broker
    /// answers already, so no startup wait: a second connection it refuses fails at once.
    pub(crate) async fn sibling(&self, role: &str) -> Result<Connection> {
        let mut options = self.owner.options.clone();
        let name = match &options.connection_name {
            Some(name) => format!("{name} ({role})"),
            None => format!("lepus {role}"),
        };
        options.connection_name = Some(name);
        options.startup_wait = Duration::ZERO;
        options.connect().await
    }

    /// True when `other` reaches the same broker (the same URLs, in the same order).
    pub(crate) fn same_broker(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.owner, &other.owner) || self.owner.urls == other.owner.urls
    }

    /// Follows the link state (for clients and workers).
    pub(crate) fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.owner.shared.link.subscribe()
    }

    /// Waits for a link whose generation is above `after`, unless `stop` turns true first:
    /// `None` once stopped or when the connection is closed (for the background loops that
    /// follow reconnections until the stop signal: control listener, scheduler).
    pub(crate) async fn link_until(
        &self,
        after: u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Link> {
        tokio::select! {
            link = self.link_after(after) => link.ok(),
            _ = stop.wait_for(|stop| *stop) => None,
        }
    }

    /// Waits for a link whose generation is above `after` (0 accepts any).
    pub(crate) async fn link_after(&self, after: u64) -> Result<Link> {
        let mut rx = self.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                LinkState::Up(link) if link.generation > after => return Ok(link.clone()),
                LinkState::Closed => return Err(Error::Closed),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }
}

impl ConnectOptions {
    /// The first connection: [`connect_any`] again with the backoff until the startup wait
    /// is over, as long as the failures are ones a broker coming up would cause.
    async fn connect_first(&self) -> Result<(lapin::Connection, usize)> {
        let deadline = tokio::time::Instant::now() + self.startup_wait;
        let mut attempt = 0u32;
        loop {
            let err = match connect_any(self, 0).await {
                Ok(connected) => return Ok(connected),
                Err(err) => err,
            };
            let delay = self.backoff.delay(attempt);
            if !broker_may_come_up(&err) || tokio::time::Instant::now() + delay > deadline {
                return Err(err);
            }
            if attempt == 0 {
                info!(
                    url = %redact(&self.urls[0]),
                    cause = %err,
                    wait = ?self.startup_wait,
                    "broker not reachable yet; waiting for it"
                );
            }
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    }
}

/// True for the failures of a broker that is not up (yet): nothing listens, the connection was
/// reset, the attempt timed out. A broker that answered and refused is not retried.
fn broker_may_come_up(err: &Error) -> bool {
    match err {
        Error::Timeout(_) => true,
        Error::Transport(err) => matches!(
            err.kind(),
            lapin::ErrorKind::IOError(_) | lapin::ErrorKind::InvalidConnectionState(_)
        ),
        _ => false,
    }
}

/// Tries each URL once, starting at `start`; returns the connection and the URL's index.
async fn connect_any(options: &ConnectOptions, start: usize) -> Result<(lapin::Connection, usize)> {
    let mut last = None;
    for offset in 0..options.urls.len() {
        let index = (start + offset) % options.urls.len();
        let url = &options.urls[index];
        let mut properties = ConnectionProperties::default();
        if let Some(name) = &options.connection_name {
            properties = properties.with_connection_name(name.as_str().into());
        }
        let attempt = lapin::Connection::connect(url, properties);
        match tokio::time::timeout(options.connect_timeout, attempt).await {
            Ok(Ok(conn)) => return Ok((conn, index)),
            Ok(Err(err)) => {
                debug!(url = %redact(url), cause = %err, "connect failed");
                last = Some(Error::Transport(err));
            }
            Err(_) => {
                debug!(url = %redact(url), "connect timed out");
                last = Some(Error::Timeout(options.connect_timeout));
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("no broker URL".into())))
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The supervisor: watches the live connection, reconnects when it is lost, closes on request.
async fn supervise(
    options: ConnectOptions,
    shared: Arc<Shared>,
    mut close: watch::Receiver<bool>,
    mut url_index: usize,
    first_blocked: watch::Sender<bool>,
) {
    let mut generation = 1;
    let mut blocked = first_blocked;
    let mut current = match &*shared.link.borrow() {
        LinkState::Up(link) => Some(link.conn.clone()),
        _ => None,
    };
    loop {
        if let Some(conn) = current.take() {
            info!(
                url = %redact(&options.urls[url_index]),
                generation,
                "connected to broker"
            );
            let closing = wait_for_loss(&conn, &mut close, &blocked).await;
            if closing {
                shared.link.send_replace(LinkState::Closed);
                if conn.status().connected() {
                    // Bounded: a connection the broker blocked (`connection.blocked`) is not
                    // read, and its `close-ok` would never come.
                    let _ =
                        tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "bye".into())).await;
                }
                return;
            }
            warn!(generation, "connection to broker lost; reconnecting");
            shared.link.send_replace(LinkState::Down);
            // Start with the next URL: the one we lost may be the node that died.
            url_index = (url_index + 1) % options.urls.len();
        }
        let mut attempt = 0u32;
        while current.is_none() {
            match connect_any(&options, url_index).await {
                Ok((conn, index)) => {
                    url_index = index;
                    generation += 1;
                    let conn = Arc::new(conn);
                    let (blocked_tx, blocked_rx) = watch::channel(false);
                    blocked = blocked_tx;
                    shared.link.send_replace(LinkState::Up(Link {
                        conn: conn.clone(),
                        generation,
                        blocked: blocked_rx,
                    }));
                    current = Some(conn);
                }
                Err(err) => {
                    let delay = options.backoff.delay(attempt);
                    warn!(attempt, cause = %err, ?delay, "reconnect failed");
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = close.wait_for(|closed| *closed) => {
                            shared.link.send_replace(LinkState::Closed);
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Waits until `conn` is no longer usable (returns `false`) or a close is requested (`true`),
/// keeping `blocked` in line with the broker's `connection.blocked` / `unblocked`.
async fn wait_for_loss(
    conn: &lapin::Connection,
    close: &mut watch::Receiver<bool>,
    blocked: &watch::Sender<bool>,
) -> bool {
    let mut events = conn.events_listener();
    let mut poll = tokio::time::interval(STATUS_POLL);
    loop {
        blocked.send_if_modified(|was| {
            let now = conn.status().blocked();
            std::mem::replace(was, now) != now
        });
        tokio::select! {
            _ = close.wait_for(|closed| *closed) => return true,
            event = events.next() => match event {
                Some(lapin::Event::Error(err)) => {
                    debug!(cause = %err, "connection error event");
                    if !conn.status().connected() {
                        return false;
                    }
                }
                Some(_) => {}
                None => return false,
            },
            _ = poll.tick() => {
                if !conn.status().connected() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
