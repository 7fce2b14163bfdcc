//! One client connection: the handshake (protocol header, start/start-ok, tune/tune-ok, open),
//! the read loop that decodes frames and runs methods, heartbeat supervision, closing in both
//! directions, and cleanup (requeue unacked, cancel consumers, drop exclusive queues).
//!
//! Task layout: [`serve`] runs the reader and all method handling in one task (handlers never
//! await: routing and queue work use short synchronous locks), inside a `outbox::batch` per
//! turn, so what a read buffer's frames send is written when they are handled, from this task;
//! a turn ends when the buffer is drained or the turn's work passes `fairness::WORK_PER_TURN`
//! (the task then yields before handling the rest);
//! a second task (the writer, see `crate::outbox`) writes the rest. Other tasks talk to a
//! connection only through its outbox (deliveries, cancel notifications) and its event queue
//! ([`crate::connection_registry::ConnEvent`], delayed confirms). A reply that promises durability (a durable topology
//! change's `-ok`, `tx.commit-ok`, `purge-ok`) is held until the store commits
//! ([`Session::reply_when_committed`](crate::methods::Session::reply_when_committed)); the task then awaits that commit before it handles
//! the next frame.

mod dispatch;
mod events;
mod handshake;
mod read_block;

use events::committed;
use handshake::handshake;
pub(crate) use read_block::ReadBlocks;

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
use crate::methods::{HeldReply, Session};
use crate::outbox::{self, Outbound, Outbox};
use crate::shutdown::Shutdown;

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
    /// What the method handlers act on (channels, vhost, outbox, grants...).
    pub(crate) session: Session,
    /// The client's address, for logs.
    pub(crate) peer: SocketAddr,
    /// Negotiated channel_max.
    pub(crate) channel_max: u16,
    /// Negotiated frame_max.
    pub(crate) frame_max: u32,
    /// Set once we sent `connection.close`: only close/close-ok are processed after it.
    closing_since: Option<Instant>,
    /// Set when the connection is finished and the loop should end.
    done: bool,
    /// Negotiated heartbeat (`None` = disabled); two silent intervals close the connection.
    heartbeat: Option<Duration>,
    /// The read buffer's current block, charged while a message keeps a slice of it.
    blocks: ReadBlocks,
}

/// Serves one accepted socket until it closes or the broker stops.
pub(crate) async fn serve(
    mut read: ReadStream,
    write: crate::outbox::WriteSide,
    peer: SocketAddr,
    local_addr: Option<SocketAddr>,
    broker: Arc<BrokerShared>,
    mut shutdown: Shutdown,
) {
    let id = broker.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let (writer_tx, writer_run) = outbox::outbox(write);
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
                user: conn.session.grants.user.clone(),
                vhost: conn.session.vhost.name.clone(),
                connected_at: std::time::SystemTime::now(),
            },
            events_tx.clone(),
        );
        conn.session.events = events_tx;
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
        let mut alarm = self.session.blocking.alarm();
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
            let more = outbox::batch(|| self.handle_buffer(buf));
            if self.done {
                return true;
            }
            // Blocked by the memory alarm: the socket (heartbeats included) is not read, and
            // the heartbeat deadline is held off while it lasts.
            let paused =
                self.closing_since.is_none() && self.session.blocking.update(&self.session.outbox);
            // A reply waiting for the store holds back the frames after it (they are not read
            // meanwhile; the wait is ours, not a silent client).
            let holding = self.session.held.is_some();
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
                Some(ev) = events.recv() => outbox::batch(|| self.handle_event(ev)),
                outcome = committed(&mut self.session.held), if holding => {
                    outbox::batch(|| self.release_held(outcome));
                }
                Ok(()) = alarm.changed() => {}
                r = read.read_buf(buf), if !paused && !holding => match r {
                    Ok(0) => {
                        if self.closing_since.is_none() {
                            debug!(connection = self.session.id, peer = %self.peer, "client closed the socket");
                        }
                        return false;
                    }
                    Err(err) => {
                        debug!(connection = self.session.id, peer = %self.peer, cause = %err, "read failed");
                        return false;
                    }
                    Ok(_) => {
                        last_read = Instant::now();
                        if let Some(poller) = &self.session.broker.busy_poll {
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
                        warn!(connection = self.session.id, peer = %self.peer, "missed heartbeats from client, closing");
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
        self.blocks.observe(buf);
        self.session.work = 0;
        let mut more = false;
        while self.session.held.is_none() && (self.closing_since.is_none() || !self.done) {
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
            self.session.work += 1;
            if self.session.work >= WORK_PER_TURN {
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

    /// Reports a failure: closes the channel (soft error) or the connection (hard error).
    pub(crate) fn fail(&mut self, channel: u16, err: AmqpError) {
        warn!(
            connection = self.session.id,
            peer = %self.peer,
            channel,
            code = err.code.code(),
            text = %err.text,
            "{}",
            if err.code.is_channel_level() && channel != 0 { "channel error" } else { "connection error" }
        );
        if err.code.is_channel_level() && channel != 0 {
            self.session.release_channel(channel);
            if let Some(ch) = self.session.channels.get_mut(&channel) {
                ch.state = ChannelState::Closing;
            }
            self.session.send(
                channel,
                AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code: err.code.code(),
                    reply_text: ShortString::try_new(err.reply_text()).unwrap_or_default(),
                    class_id: err.class_id,
                    method_id: err.method_id,
                })),
            );
        } else if self.closing_since.is_none() {
            send_connection_close(&self.session.outbox, &err);
            self.closing_since = Some(Instant::now());
            // Nothing more goes out but close-ok, which must be read.
            self.session.held = None;
            let ids: Vec<u16> = self.session.channels.keys().copied().collect();
            for id in ids {
                self.session.release_channel(id);
            }
        }
    }

    /// Final cleanup once the loop ends: every channel released, exclusive queues deleted.
    ///
    /// The consumers of every channel go first, then each channel's unacked messages: a
    /// message one channel returns must not be delivered to another channel of this closing
    /// connection (where a no-ack consumer would lose it). RabbitMQ leaves this to a race
    /// between its channel processes; we always keep the message.
    fn cleanup(&mut self) {
        let ids: Vec<u16> = self.session.channels.keys().copied().collect();
        let mut handed_over = Vec::new();
        for id in &ids {
            if let Some(channel) = self.session.channels.get(id) {
                let shared = channel.shared.clone();
                let consumers: Vec<_> = shared.consumers().drain().collect();
                for (tag, c) in consumers {
                    handed_over.extend(self.session.detach_consumer(&tag, c, &shared));
                }
            }
        }
        for id in ids {
            self.session.release_channel(id);
        }
        // Single active consumers handed over to another connection's consumer are served
        // once every channel's messages are back.
        for queue in handed_over {
            self.session.vhost.dispatch(&queue);
        }
        self.session.channels.clear();
        for name in std::mem::take(&mut self.session.exclusive_queues) {
            let owned = self
                .session
                .vhost
                .queue(&name)
                .is_some_and(|q| q.exclusive_owner == Some(self.session.id));
            if owned {
                self.session.vhost.delete_queue_now(&name);
            }
        }
        info!(connection = self.session.id, peer = %self.peer, "connection closed");
    }
}
