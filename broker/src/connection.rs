//! One client connection: the handshake (protocol header, start/start-ok, tune/tune-ok, open),
//! the read loop that decodes frames and runs methods, heartbeat supervision, closing in both
//! directions, and cleanup (requeue unacked, cancel consumers, drop exclusive queues).
//!
//! Task layout: [`serve`] runs the reader and all method handling in one task (handlers never
//! await: routing and queue work use short synchronous locks), inside a `writer::batch` per
//! turn, so what a read buffer's frames send is written when they are handled, from this task;
//! a turn ends when the buffer is drained or the turn's work passes `fairness::WORK_PER_TURN`
//! (the task then yields before handling the rest);
//! a second task (the writer, see `crate::writer`) writes the rest. Other tasks talk to a
//! connection only through its outbox (deliveries, cancel notifications) and its event queue
//! ([`crate::connection_registry::ConnEvent`], delayed confirms). A reply that promises durability (a durable topology
//! change's `-ok`, `tx.commit-ok`, `purge-ok`) is held until the store commits
//! ([`Connection::reply_when_committed`]); the task then awaits that commit before it handles
//! the next frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::auth::{self, AuthError};
use crate::broker_state::BrokerShared;
use crate::channel::{Channel, ChannelState};
use crate::connection_registry::ConnEvent;
use crate::error::{AmqpError, ReplyCode};
use crate::fairness::WORK_PER_TURN;
use crate::frame::{self, InboundFrame, PROTOCOL_HEADER};
use crate::shutdown::Shutdown;
use crate::vhost::VHost;
use crate::writer::{self, Outbound, Outbox};

/// The largest frame a client may send before `tune-ok` (AMQP 0-9-1 `frame-min-size`), and the
/// lowest frame_max a client may negotiate.
pub(crate) const FRAME_MIN_SIZE: u32 = 4096;

/// How long we wait for `close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Stands for "no deadline" when heartbeats are off (tokio's timer reaches about two years).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The read side of a client's byte stream: a plain TCP read half, or a TLS stream's read
/// half (boxed so one connection task serves both; reads are batched, so the virtual call
/// per read costs nothing measurable).
pub(crate) type ReadStream = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// The connection task's state after a successful handshake.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Broker-unique id (exclusive-queue owner, log field).
    pub(crate) id: u64,
    /// The client's address, for logs.
    pub(crate) peer: SocketAddr,
    /// The vhost opened with `connection.open`.
    pub(crate) vhost: Arc<VHost>,
    /// Frames to the client (shared with this connection's channels and the writer task).
    pub(crate) writer: Arc<Outbox>,
    /// Events for this task (held by store-confirm waiters).
    pub(crate) events: mpsc::UnboundedSender<ConnEvent>,
    /// Open (or closing) channels.
    pub(crate) channels: HashMap<u16, Channel>,
    /// Negotiated channel_max.
    pub(crate) channel_max: u16,
    /// Negotiated frame_max.
    pub(crate) frame_max: u32,
    /// The client handles broker-sent `basic.cancel`.
    pub(crate) cancel_notify: bool,
    /// Exclusive queues this connection declared (deleted when it closes).
    pub(crate) exclusive_queues: Vec<String>,
    /// Direct reply-to tokens by channel.
    pub(crate) reply_tokens: HashMap<u16, ReplyToken>,
    /// The authenticated user and its cached permissions in `vhost` (checked per method).
    pub(crate) grants: crate::access::Grants,
    /// Set once we sent `connection.close`: only close/close-ok are processed after it.
    closing_since: Option<Instant>,
    /// Set when the connection is finished and the loop should end.
    done: bool,
    /// Negotiated heartbeat (`None` = disabled); two silent intervals close the connection.
    heartbeat: Option<Duration>,
    /// The broker: its limits (`config`) and the channel registry this connection's channels
    /// join while open.
    pub(crate) broker: Arc<BrokerShared>,
    /// The memory alarm as it applies to this connection (`connection.blocked`).
    pub(crate) blocking: crate::connection_blocked::Blocking,
    /// Work done since this task last yielded (see `fairness`); methods add what they cost
    /// beyond one unit per frame.
    pub(crate) work: usize,
    /// A reply waiting for the store (see [`Connection::reply_when_committed`]); while it
    /// waits, no further frame of this connection is handled.
    held: Option<HeldReply>,
}

/// A reply that must not go out before the store has committed what it reports: a durable
/// topology change's `-ok`, `tx.commit-ok`, `purge-ok`.
#[derive(Debug)]
struct HeldReply {
    /// The channel to reply on.
    channel: u16,
    /// The reply.
    method: AMQPClass,
    /// Resolves once the change is committed (or failed).
    commit: crate::store::Commit,
}

/// Serves one accepted socket until it closes or the broker stops.
pub(crate) async fn serve(
    mut read: ReadStream,
    write: crate::writer::WriteSide,
    peer: SocketAddr,
    local_addr: Option<SocketAddr>,
    broker: Arc<BrokerShared>,
    mut shutdown: Shutdown,
) {
    let id = broker.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let (writer_tx, writer_run) = writer::outbox(write);
    let writer_task = tokio::spawn(writer_run);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let timeout = broker.config.handshake_timeout;
    let handshake = tokio::select! {
        r = tokio::time::timeout(timeout, handshake(&mut read, &mut buf, &writer_tx, &broker, peer, id)) => match r {
            Ok(r) => r,
            Err(_) => {
                warn!(connection = id, %peer, "handshake timed out");
                None
            }
        },
        _ = shutdown.recv() => None,
    };
    if let Some(mut conn) = handshake {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        broker.connections.register(
            crate::connection_registry::ConnectionInfo {
                id,
                peer,
                local: local_addr,
                user: conn.grants.user.clone(),
                vhost: conn.vhost.name.clone(),
                connected_at: std::time::SystemTime::now(),
            },
            events_tx.clone(),
        );
        conn.events = events_tx;
        let closed_cleanly = conn
            .run(&mut read, &mut buf, events_rx, &mut shutdown)
            .await;
        conn.cleanup();
        broker.connections.remove(id);
        if closed_cleanly {
            // Like RabbitMQ, let the client close the socket after close-ok (clients such as
            // lapin report a socket closed under them as an error), but not for long.
            wait_for_eof(&mut read, Duration::from_secs(1)).await;
        }
    } else {
        // Give the writer a moment to flush a close or protocol header before we hang up.
        wait_for_eof(&mut read, Duration::from_millis(200)).await;
    }
    let _ = writer_tx.send(Outbound::Shutdown);
    drop(writer_tx);
    let _ = writer_task.await;
    debug!(connection = id, %peer, "connection finished");
}

/// Discards input until the peer closes its side or `limit` passes.
async fn wait_for_eof(read: &mut ReadStream, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let mut scratch = [0u8; 1024];
        while let Ok(n) = read.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Reads until a frame is decoded. `None` on EOF, socket error or a framing error (after
/// sending `connection.close` for the latter).
async fn next_frame(
    read: &mut ReadStream,
    buf: &mut BytesMut,
    writer: &Arc<Outbox>,
    frame_max: u32,
) -> Option<InboundFrame> {
    loop {
        match frame::decode(buf, frame_max) {
            Ok(Some(InboundFrame::Heartbeat(0))) => continue,
            Ok(Some(f)) => return Some(f),
            Ok(None) => {}
            Err(err) => {
                send_connection_close(writer, &err);
                return None;
            }
        }
        match read.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn send_connection_close(writer: &Arc<Outbox>, err: &AmqpError) {
    let _ = writer.send(Outbound::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: err.code.code(),
            reply_text: ShortString::try_new(err.reply_text()).unwrap_or_default(),
            class_id: err.class_id,
            method_id: err.method_id,
        })),
    ));
}

/// The server properties of `connection.start`.
fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props.insert("product".into(), s("Lepus"));
    props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), s("Rust"));
    props.insert("cluster_name".into(), s("lepus"));
    props.insert("copyright".into(), s("The Lepus authors"));
    props.insert(
        "information".into(),
        s("Lepus bundled AMQP 0-9-1 broker; licensed MIT OR Apache-2.0"),
    );
    props
}

/// Runs the handshake up to `open-ok`. `None` when the client went away or was refused.
async fn handshake(
    read: &mut ReadStream,
    buf: &mut BytesMut,
    writer: &Arc<Outbox>,
    broker: &Arc<BrokerShared>,
    peer: SocketAddr,
    id: u64,
) -> Option<Connection> {
    while buf.len() < 8 {
        match read.read_buf(buf).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    let _ = writer.send(Outbound::Raw(PROTOCOL_HEADER));
                }
                return None;
            }
            Ok(_) => {
                if buf.len() < 8 && !PROTOCOL_HEADER.starts_with(&buf[..]) {
                    break;
                }
            }
        }
    }
    if buf.len() < 8 || &buf[..8] != PROTOCOL_HEADER {
        warn!(connection = id, %peer, "bad protocol header");
        let _ = writer.send(Outbound::Raw(PROTOCOL_HEADER));
        return None;
    }
    buf.advance(8);
    let config = &broker.config;
    let send = |m: connection::AMQPMethod| {
        let _ = writer.send(Outbound::Method(0, AMQPClass::Connection(m)));
    };
    send(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: auth::MECHANISMS.into(),
        locales: "en_US".into(),
    }));
    let unexpected = |what: &str| {
        let err = AmqpError::command_invalid(format!("expected {what}"));
        warn!(connection = id, %peer, code = err.code.code(), text = %err.text, "handshake failed");
        send_connection_close(writer, &err);
        None
    };
    // Spec (section 4.2.3): "Until the frame-max has been negotiated, both peers MUST accept
    // frames of up to frame-min-size octets large", and no larger: frames before tune-ok are
    // held to 4,096 bytes, overhead included (a larger one is 501 FRAME_ERROR). RabbitMQ adds
    // its 8-byte fudge here too (payloads up to 4,096) and drops the socket on a larger one.
    let start_ok = match next_frame(read, buf, writer, FRAME_MIN_SIZE).await? {
        InboundFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(m))) => m,
        _ => return unexpected("connection.start-ok"),
    };
    let client_capability =
        |name: &str| match start_ok.client_properties.inner().get("capabilities") {
            Some(AMQPValue::FieldTable(caps)) => {
                matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
            }
            _ => false,
        };
    let cancel_notify = client_capability("consumer_cancel_notify");
    let blocked_notify = client_capability("connection.blocked");
    let failure_close = client_capability("authentication_failure_close");
    let user = match auth::authenticate(
        start_ok.mechanism.as_str(),
        start_ok.response.as_bytes(),
        &broker.access,
        peer.ip(),
    ) {
        Ok(user) => user,
        Err(err @ AuthError::UnknownMechanism(_)) => {
            // Spec (start-ok, "mechanism"): the server MUST close the connection without
            // sending any further data. RabbitMQ does the same.
            warn!(connection = id, %peer, cause = %err, "login refused");
            return None;
        }
        Err(err) => {
            let err = AmqpError::access_refused(err.to_string());
            warn!(connection = id, %peer, text = %err.text, "login refused");
            // As RabbitMQ: a client that announced `authentication_failure_close` gets
            // connection.close 403; any other client just sees the socket close (AMQP 0-9-1
            // has no other way to report a failed login).
            if failure_close {
                send_connection_close(writer, &err);
            }
            return None;
        }
    };
    let heartbeat = u16::try_from(config.heartbeat.as_secs()).unwrap_or(u16::MAX);
    send(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        heartbeat,
    }));
    let tune_ok = match next_frame(read, buf, writer, FRAME_MIN_SIZE).await? {
        InboundFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(m))) => m,
        _ => return unexpected("connection.tune-ok"),
    };
    let negotiate = |ours: u32, theirs: u32| match (ours, theirs) {
        (0, t) => t,
        (o, 0) => o,
        (o, t) => o.min(t),
    };
    // A client may lower the limits but not raise them (0 means "no limit": take ours), and
    // frame_max may not go below the spec's 4096; RabbitMQ refuses these too.
    let refusal = if tune_ok.channel_max > config.channel_max && config.channel_max != 0 {
        Some(format!(
            "negotiated channel_max = {} is higher than the maximum allowed value ({})",
            tune_ok.channel_max, config.channel_max
        ))
    } else if tune_ok.frame_max != 0 && tune_ok.frame_max < FRAME_MIN_SIZE {
        Some(format!(
            "frame_max={} < {FRAME_MIN_SIZE} min size",
            tune_ok.frame_max
        ))
    } else if tune_ok.frame_max > config.frame_max && config.frame_max != 0 {
        Some(format!(
            "frame_max={} > {} max size",
            tune_ok.frame_max, config.frame_max
        ))
    } else {
        None
    };
    if let Some(text) = refusal {
        // Spec (tune-ok): the server MUST close the connection without attempting a
        // negotiated close. RabbitMQ drops the socket too.
        warn!(connection = id, %peer, %text, "tune-ok refused");
        return None;
    }
    let frame_max = negotiate(config.frame_max, tune_ok.frame_max).max(FRAME_MIN_SIZE);
    let channel_max = negotiate(
        u32::from(config.channel_max),
        u32::from(tune_ok.channel_max),
    );
    let channel_max = u16::try_from(channel_max).unwrap_or(u16::MAX);
    // The client's heartbeat value is final (0 disables), as in RabbitMQ.
    let heartbeat =
        (tune_ok.heartbeat > 0).then(|| Duration::from_secs(u64::from(tune_ok.heartbeat)));
    let _ = writer.send(Outbound::Tune {
        frame_max,
        heartbeat,
    });
    let open = match next_frame(read, buf, writer, frame_max).await? {
        InboundFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(m))) => m,
        _ => return unexpected("connection.open"),
    };
    if let Some(max) = broker.config.max_connections {
        // Counted at connection.open, as RabbitMQ checks `connection_max`: handshakes in
        // progress do not count, open connections do.
        if broker.connections.count() >= max {
            let err = AmqpError::not_allowed(format!(
                "connection refused: node connection limit ({max}) is reached"
            ))
            .in_method(10, 40);
            warn!(connection = id, %peer, limit = max, "connection limit reached");
            send_connection_close(writer, &err);
            return None;
        }
    }
    if broker.access.vhost_exists(open.virtual_host.as_str())
        && !broker
            .access
            .can_open_vhost(&user, open.virtual_host.as_str())
    {
        let err = AmqpError::not_allowed(format!(
            "access to vhost '{}' refused for user '{user}'",
            open.virtual_host.as_str()
        ))
        .in_method(10, 40);
        warn!(connection = id, %peer, %user, vhost = open.virtual_host.as_str(), "vhost access refused");
        send_connection_close(writer, &err);
        return None;
    }
    let vhost = broker
        .vhosts
        .get(open.virtual_host.as_str())
        .filter(|_| broker.access.vhost_exists(open.virtual_host.as_str()));
    let Some(vhost) = vhost else {
        let err = AmqpError::not_allowed(format!("vhost {} not found", open.virtual_host.as_str()))
            .in_method(10, 40);
        warn!(connection = id, %peer, vhost = open.virtual_host.as_str(), "unknown vhost");
        send_connection_close(writer, &err);
        return None;
    };
    send(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    info!(connection = id, %peer, %user, vhost = %vhost.name, "connection opened");
    let (events, _) = mpsc::unbounded_channel();
    let blocking =
        crate::connection_blocked::Blocking::new(vhost.memory.subscribe(), blocked_notify);
    let grants = crate::access::Grants::new(user, vhost.name.clone(), broker.access.clone());
    Some(Connection {
        id,
        peer,
        vhost,
        writer: writer.clone(),
        events,
        channels: HashMap::new(),
        channel_max,
        frame_max,
        cancel_notify,
        exclusive_queues: Vec::new(),
        reply_tokens: HashMap::new(),
        grants,
        closing_since: None,
        done: false,
        heartbeat,
        broker: broker.clone(),
        blocking,
        work: 0,
        held: None,
    })
}

impl Connection {
    /// Serves frames until the connection ends; true when it ended with a completed
    /// close/close-ok exchange (the client then closes the socket itself).
    async fn run(
        &mut self,
        read: &mut ReadStream,
        buf: &mut BytesMut,
        mut events: mpsc::UnboundedReceiver<ConnEvent>,
        shutdown: &mut Shutdown,
    ) -> bool {
        let mut last_read = Instant::now();
        let mut alarm = self.blocking.alarm();
        // One timer and one stop listener for the connection's life, not one per read: a
        // timer created per loop turn is registered in and removed from tokio's timer wheel
        // for every batch of frames. The timer is armed at the earliest deadline that can
        // apply and re-armed lazily when it fires (reads only move the heartbeat deadline
        // later); entering the closing state re-arms it at once.
        let timer = tokio::time::sleep_until(self.deadline(last_read));
        tokio::pin!(timer);
        let mut armed_for_close = false;
        let stop = shutdown.recv();
        tokio::pin!(stop);
        loop {
            // Everything the frames in the buffer send (our replies, deliveries to consumers
            // on other connections) is written when the batch ends: one write per connection
            // written to, from this thread, without waking the writer tasks.
            let more = writer::batch(|| self.handle_buffer(buf));
            if self.done {
                return true;
            }
            // Blocked by the memory alarm: the socket (heartbeats included) is not read, and
            // the heartbeat deadline is held off while it lasts.
            let paused = self.closing_since.is_none() && self.blocking.update(&self.writer);
            // A reply waiting for the store holds back the frames after it (they are not read
            // meanwhile; the wait is ours, not a silent client).
            let holding = self.held.is_some();
            if paused || holding {
                last_read = Instant::now();
            }
            if more && !paused && !holding {
                // This client's turn is over (see `fairness`); its remaining frames are
                // handled when the runtime comes back to this task. The client is plainly
                // alive.
                last_read = Instant::now();
                tokio::task::yield_now().await;
                continue;
            }
            if self.closing_since.is_some() && !armed_for_close {
                armed_for_close = true;
                timer.as_mut().reset(self.deadline(last_read));
            }
            tokio::select! {
                _ = &mut stop, if self.closing_since.is_none() => {
                    self.fail(0, AmqpError::new(ReplyCode::ConnectionForced, "broker forced connection closure with reason 'shutdown'"));
                }
                Some(ev) = events.recv() => writer::batch(|| self.handle_event(ev)),
                outcome = committed(&mut self.held), if holding => {
                    writer::batch(|| self.release_held(outcome));
                }
                Ok(()) = alarm.changed() => {}
                r = read.read_buf(buf), if !paused && !holding => match r {
                    Ok(0) => {
                        if self.closing_since.is_none() {
                            debug!(connection = self.id, peer = %self.peer, "client closed the socket");
                        }
                        return false;
                    }
                    Err(err) => {
                        debug!(connection = self.id, peer = %self.peer, cause = %err, "read failed");
                        return false;
                    }
                    Ok(_) => {
                        last_read = Instant::now();
                        if let Some(poller) = &self.broker.busy_poll {
                            poller.touch();
                        }
                    }
                },
                _ = &mut timer, if self.closing_since.is_some() || self.heartbeat.is_some() => {
                    if paused || holding {
                        last_read = Instant::now();
                    }
                    let deadline = self.deadline(last_read);
                    if deadline > Instant::now() {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    if self.closing_since.is_none() {
                        warn!(connection = self.id, peer = %self.peer, "missed heartbeats from client, closing");
                    }
                    return false;
                }
            }
        }
    }

    /// Handles the complete frames in `buf` (up to a reply that waits for the store), then
    /// sends the coalesced confirms. Stops early, returning true, once this turn's work passes
    /// [`WORK_PER_TURN`] (frames may be left).
    fn handle_buffer(&mut self, buf: &mut BytesMut) -> bool {
        self.work = 0;
        let mut more = false;
        while self.held.is_none() && (self.closing_since.is_none() || !self.done) {
            match frame::decode(buf, self.frame_max) {
                Ok(Some(f)) => self.handle_frame(f),
                Ok(None) => break,
                Err(err) => {
                    buf.clear();
                    self.fail(0, err);
                    break;
                }
            }
            if self.done {
                break;
            }
            self.work += 1;
            if self.work >= WORK_PER_TURN {
                more = true;
                break;
            }
        }
        self.flush_confirms();
        more
    }

    /// When the connection gives up waiting: `close-ok` [`CLOSE_TIMEOUT`] after we sent
    /// `connection.close`, else two heartbeat intervals after the last read (a year away when
    /// heartbeats are off).
    fn deadline(&self, last_read: Instant) -> Instant {
        match (self.closing_since, self.heartbeat) {
            (Some(since), _) => since + CLOSE_TIMEOUT,
            (None, Some(hb)) => last_read + hb * 2,
            (None, None) => last_read + NO_DEADLINE,
        }
    }

    /// Queues a method frame to the client.
    pub(crate) fn send(&self, channel: u16, method: AMQPClass) {
        let _ = self.writer.send(Outbound::Method(channel, method));
    }

    /// Sends `method` on `channel` once `commit` resolves (at once when there is none): the
    /// reply to a change the store must make durable first. Until then this connection
    /// handles no further frame, so later replies cannot overtake it; other connections are
    /// not held up, and the store's group commit serves them all with one fsync. If the commit
    /// fails the connection is closed with 541 INTERNAL_ERROR instead.
    pub(crate) fn reply_when_committed(
        &mut self,
        channel: u16,
        method: AMQPClass,
        commit: Option<crate::store::Commit>,
    ) {
        match commit {
            None => self.send(channel, method),
            Some(commit) => {
                self.held = Some(HeldReply {
                    channel,
                    method,
                    commit,
                });
            }
        }
    }

    /// The held reply's commit resolved: send it, or fail the connection.
    fn release_held(&mut self, outcome: Result<(), crate::store::StoreError>) {
        let Some(held) = self.held.take() else {
            return;
        };
        if self.closing_since.is_some() {
            return;
        }
        match outcome {
            Ok(()) => {
                let open = self
                    .channels
                    .get(&held.channel)
                    .is_some_and(|ch| ch.state == ChannelState::Open);
                if open {
                    self.send(held.channel, held.method);
                }
            }
            Err(err) => self.fail(
                0,
                AmqpError::new(
                    ReplyCode::InternalError,
                    format!("cannot make the change durable: {err}"),
                ),
            ),
        }
    }

    /// Reports a failure: closes the channel (soft error) or the connection (hard error).
    pub(crate) fn fail(&mut self, channel: u16, err: AmqpError) {
        warn!(
            connection = self.id,
            peer = %self.peer,
            channel,
            code = err.code.code(),
            text = %err.text,
            "{}",
            if err.code.is_channel_level() && channel != 0 { "channel error" } else { "connection error" }
        );
        if err.code.is_channel_level() && channel != 0 {
            self.release_channel(channel);
            if let Some(ch) = self.channels.get_mut(&channel) {
                ch.state = ChannelState::Closing;
            }
            self.send(
                channel,
                AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code: err.code.code(),
                    reply_text: ShortString::try_new(err.reply_text()).unwrap_or_default(),
                    class_id: err.class_id,
                    method_id: err.method_id,
                })),
            );
        } else if self.closing_since.is_none() {
            send_connection_close(&self.writer, &err);
            self.closing_since = Some(Instant::now());
            // Nothing more goes out but close-ok, which must be read.
            self.held = None;
            let ids: Vec<u16> = self.channels.keys().copied().collect();
            for id in ids {
                self.release_channel(id);
            }
        }
    }

    fn handle_frame(&mut self, frame: InboundFrame) {
        if self.closing_since.is_some() {
            match frame {
                InboundFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                ) => {
                    self.done = true;
                }
                InboundFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)),
                ) => {
                    self.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    );
                    self.done = true;
                }
                _ => {}
            }
            return;
        }
        let result = match frame {
            InboundFrame::Heartbeat(0) => Ok(()),
            InboundFrame::Heartbeat(ch) => Err((
                ch,
                AmqpError::unexpected_frame(format!("heartbeat frame on channel {ch}")),
            )),
            InboundFrame::Method(0, method) => self.connection_method(method).map_err(|e| (0, e)),
            InboundFrame::Method(ch, method) => self.channel_method(ch, method),
            InboundFrame::Header(ch, header) => self.content_header(ch, header),
            InboundFrame::Body(ch, body) => self.content_body(ch, body),
        };
        if let Err((ch, err)) = result {
            self.fail(ch, err);
        }
    }

    fn connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                debug!(connection = self.id, peer = %self.peer, code = close.reply_code, text = close.reply_text.as_str(), "client closed the connection");
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.done = true;
                self.closing_since = Some(Instant::now());
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(()),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Connection(_) => Err(AmqpError::channel_error(
                "unexpected method in connection state running",
            )
            .in_method(class_id, method_id)),
            _ => Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .in_method(class_id, method_id),
            ),
        }
    }

    fn channel_method(&mut self, ch: u16, method: AMQPClass) -> Result<(), (u16, AmqpError)> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let conn_err = |e: AmqpError| (0u16, e.in_method(class_id, method_id));
        let Some(channel) = self.channels.get_mut(&ch) else {
            if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = method {
                // RabbitMQ names no method in this close (amqp_error(..., 'none')).
                self.check_channel_max(ch).map_err(|e| (0, e))?;
                let shared = Arc::new(crate::channel::ChannelShared::new(
                    ch,
                    self.id,
                    self.writer.clone(),
                    self.cancel_notify,
                ));
                let channel = Channel::new(shared, &self.broker.channels);
                self.channels.insert(ch, channel);
                self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                return Ok(());
            }
            // Anything else, channel.close-ok included (the server sent no close on a channel
            // it does not know), is RabbitMQ's 504 "expected 'channel.open'".
            return Err(conn_err(AmqpError::channel_error(format!(
                "expected 'channel.open' on channel {ch}"
            ))));
        };
        if channel.state == ChannelState::Closing {
            match method {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.send(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                    self.channels.remove(&ch);
                }
                _ => {}
            }
            return Ok(());
        }
        if channel.content.is_some() {
            return Err(conn_err(AmqpError::unexpected_frame(format!(
                "expected content header for class 60, got method {class_id}.{method_id}"
            ))));
        }
        crate::methods::dispatch(self, ch, method).map_err(|e| {
            let e = e.in_method(class_id, method_id);
            if e.code.is_channel_level() {
                (ch, e)
            } else {
                (0, e)
            }
        })
    }

    /// Refuses to open channel `ch` beyond the negotiated channel_max (0 = no limit) with 530
    /// NOT_ALLOWED. RabbitMQ counts open channels (rabbit_reader.erl `create_channel`: "number
    /// of channels opened (~w) has reached the negotiated channel_max (~w)"); we also refuse a
    /// channel *number* above channel_max, which the spec forbids ("the highest channel
    /// number") and RabbitMQ lets through while the count is below the limit.
    fn check_channel_max(&self, ch: u16) -> Result<(), AmqpError> {
        if self.channel_max == 0 {
            return Ok(());
        }
        let open = self.channels.len();
        if open >= usize::from(self.channel_max) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            )));
        }
        if ch > self.channel_max {
            return Err(AmqpError::not_allowed(format!(
                "channel number {ch} is above the negotiated channel_max ({})",
                self.channel_max
            )));
        }
        Ok(())
    }

    fn content_header(
        &mut self,
        ch: u16,
        header: amq_protocol::frame::AMQPContentHeader,
    ) -> Result<(), (u16, AmqpError)> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Err((
                0,
                AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}")),
            ));
        };
        if channel.state == ChannelState::Closing {
            return Ok(());
        }
        let Some(content) = channel.content.as_mut().filter(|c| c.header.is_none()) else {
            return Err((
                0,
                AmqpError::unexpected_frame("content header without a preceding basic.publish"),
            ));
        };
        if header.class_id != 60 {
            return Err((
                0,
                AmqpError::unexpected_frame(format!(
                    "content header for class {}",
                    header.class_id
                )),
            ));
        }
        let max_message_size = self.broker.config.max_message_size;
        if header.body_size > max_message_size {
            // RabbitMQ's text (rabbit_channel:check_msg_size); it checks the assembled body,
            // we check the announced size so an oversized body is never buffered. The rest of
            // the content is dropped with the closing channel.
            // RabbitMQ leaves out "configured" at its own ceiling, 512 MiB.
            let configured = if max_message_size == 512 * 1024 * 1024 {
                ""
            } else {
                "configured "
            };
            return Err((
                ch,
                AmqpError::precondition_failed(format!(
                    "message size {} is larger than {configured}max size {max_message_size}",
                    header.body_size
                ))
                .in_method(60, 40),
            ));
        }
        content.header = Some((header.properties, header.body_size));
        if header.body_size == 0 {
            self.finish_publish(ch)
        } else {
            Ok(())
        }
    }

    fn content_body(&mut self, ch: u16, body: bytes::Bytes) -> Result<(), (u16, AmqpError)> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Err((
                0,
                AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}")),
            ));
        };
        if channel.state == ChannelState::Closing {
            return Ok(());
        }
        let Some(content) = channel.content.as_mut().filter(|c| c.header.is_some()) else {
            return Err((
                0,
                AmqpError::unexpected_frame("content body without a content header"),
            ));
        };
        let size = content.header.as_ref().map_or(0, |h| h.1);
        content.received += body.len() as u64;
        content.body.push(body);
        if content.received > size {
            return Err((
                0,
                AmqpError::unexpected_frame("content body larger than declared in its header"),
            ));
        }
        if content.received == size {
            self.finish_publish(ch)
        } else {
            Ok(())
        }
    }

    fn finish_publish(&mut self, ch: u16) -> Result<(), (u16, AmqpError)> {
        let Some(mut content) = self.channels.get_mut(&ch).and_then(|c| c.content.take()) else {
            return Ok(());
        };
        let body = content.take_body();
        let (properties, _) = content.header.take().unwrap_or_default();
        self.publish(ch, content.publish, properties, body)
            .map_err(|e| {
                let e = e.in_method(60, 40);
                if e.code.is_channel_level() {
                    (ch, e)
                } else {
                    (0, e)
                }
            })
    }

    fn handle_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Close { reason } => {
                self.fail(0, AmqpError::new(ReplyCode::ConnectionForced, reason));
            }
            ConnEvent::Confirm {
                channel,
                generation,
                seq,
                ok,
            } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                let same = generation
                    .upgrade()
                    .is_some_and(|g| Arc::ptr_eq(&g, &ch.shared));
                if ch.state != ChannelState::Open || !same {
                    return;
                }
                let Some(confirm) = ch.confirm.as_mut() else {
                    return;
                };
                confirm.pending_store = confirm.pending_store.saturating_sub(1);
                ch.shared.set_unconfirmed(confirm.pending_store);
                let method = if ok {
                    self.vhost.stats.confirmed();
                    basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    })
                } else {
                    basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })
                };
                self.send(channel, AMQPClass::Basic(method));
            }
        }
    }

    /// Sends the coalesced `basic.ack multiple=true` of every confirming channel.
    fn flush_confirms(&mut self) {
        for (id, ch) in self.channels.iter_mut() {
            if let Some(upto) = ch.confirm.as_mut().and_then(|c| c.ack_upto.take()) {
                let _ = self.writer.send(Outbound::Method(
                    *id,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: upto,
                        multiple: true,
                    })),
                ));
            }
        }
    }

    /// Releases what a channel holds: cancels its consumers, returns its unacked messages to
    /// their queues (original order, redelivered), drops its reply-to registration.
    pub(crate) fn release_channel(&mut self, ch: u16) {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return;
        };
        channel.content = None;
        let shared = channel.shared.clone();
        if let Some(token) = self.reply_tokens.remove(&ch) {
            self.vhost.unregister_reply_to(&token.token);
        }
        *shared.reply_to() = None;
        let consumers: Vec<_> = shared.consumers().drain().collect();
        let unacked = shared.take_all_unacked(true);
        for (tag, c) in consumers {
            if c.queue.remove_consumer(&tag, &shared) {
                self.vhost.delete_queue_now(&c.queue.name);
            }
        }
        self.requeue(unacked);
    }

    /// Returns unacked deliveries to their queues, grouped per queue in tag order.
    pub(crate) fn requeue(&self, unacked: Vec<crate::channel::Unacked>) {
        let mut groups: Vec<(Arc<crate::queue::Queue>, Vec<crate::queue::QueuedMessage>)> =
            Vec::new();
        for u in unacked {
            match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, list)) => list.push(u.message),
                None => groups.push((u.queue, vec![u.message])),
            }
        }
        for (queue, messages) in groups {
            queue.requeue(&self.vhost, messages);
        }
    }

    /// Final cleanup once the loop ends: every channel released, exclusive queues deleted.
    fn cleanup(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_channel(id);
        }
        self.channels.clear();
        for name in std::mem::take(&mut self.exclusive_queues) {
            let owned = self
                .vhost
                .queue(&name)
                .is_some_and(|q| q.exclusive_owner == Some(self.id));
            if owned {
                self.vhost.delete_queue_now(&name);
            }
        }
        info!(connection = self.id, peer = %self.peer, "connection closed");
    }
}

/// Resolves when the held reply's commit does (never when there is none: its `select!` branch
/// is disabled then).
async fn committed(held: &mut Option<HeldReply>) -> Result<(), crate::store::StoreError> {
    match held {
        Some(held) => (&mut held.commit).await,
        None => std::future::pending().await,
    }
}

/// A channel's direct reply-to registration: the token the vhost knows it by, and the
/// `reply-to` address its requests carry, built once (not per publish).
#[derive(Debug)]
pub(crate) struct ReplyToken {
    /// The vhost's key for the consuming channel.
    pub(crate) token: String,
    /// `amq.rabbitmq.reply-to.<token>`, what a request's `reply-to` is rewritten to.
    pub(crate) address: ShortString,
}
