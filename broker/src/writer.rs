//! The per-connection outbox and its writer task: everything sent to one client goes through
//! one [`Outbox`], in order, and leaves in batches — one write syscall per batch, not per frame.
//!
//! Who writes to the socket:
//! - **The task that produced the frames**, at the end of its batch. A connection task handling
//!   a read buffer runs inside [`batch`]; every outbox it sends to (its own, or the consumer
//!   connection a publish was routed to) joins the batch, and when the batch ends each one is
//!   encoded and written with one non-blocking `try_write`. A delivery thus leaves on the
//!   publisher's thread right after routing, with no hop to another task. This path is taken
//!   only for plain TCP, and only when the writer task is not mid-write.
//! - **The writer task** ([`run`]), for everything else: sends from outside a batch (timers,
//!   store confirmations, the handshake), TLS connections, the rest of a write the socket
//!   would not take at once, heartbeats, and the final flush and shutdown.
//!
//! Ordering: items are queued under the outbox lock in the order they were sent and encoded in
//! that order; bytes are written only by the lock holder (direct path) or by the writer task
//! while `writing` keeps everyone else out, and encoded bytes left over from a partial write
//! always go before newer items. So frames of a channel are never reordered, and a content
//! frame sequence is never interleaved with another channel's frames.
//!
//! Memory: queued items hold `Arc<Message>`s, not encoded bytes; at most [`BATCH_BYTES`] (plus
//! one message) is encoded ahead of the socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amq_protocol::protocol::AMQPClass;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use crate::frame;
use crate::message::Message;

/// Stop encoding into a batch beyond this many bytes (the rest waits for the next write).
const BATCH_BYTES: usize = 256 * 1024;

/// How far the heartbeat timer is pushed while heartbeats are off (re-armed by `Tune`).
const IDLE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Something to send to the client. Senders: the connection task, and queues delivering to
/// this connection's consumers (they hold the outbox through `ChannelShared`).
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Raw bytes (the protocol header we answer a mismatch with).
    Raw(&'static [u8]),
    /// A method frame.
    Method(u16, AMQPClass),
    /// A method carrying content (deliver, get-ok, return), then header and body frames.
    Content {
        /// The channel.
        channel: u16,
        /// `basic.deliver`, `basic.get-ok` or `basic.return`.
        method: AMQPClass,
        /// The message whose properties and body follow.
        message: Arc<Message>,
    },
    /// Write what is queued before this, then shut the socket down and stop; later sends are
    /// refused.
    Shutdown,
    /// Negotiated tuning: body frames are cut to `frame_max`; heartbeats every `heartbeat / 2`.
    Tune {
        /// The negotiated frame_max (0 = no limit).
        frame_max: u32,
        /// The negotiated heartbeat interval (`None` = disabled).
        heartbeat: Option<Duration>,
    },
}

/// The write side of a client's byte stream, as a generic stream (TLS, in-memory pipes).
pub(crate) type WriteStream = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// The write side handed to a connection.
pub(crate) enum WriteSide {
    /// A plain TCP write half: any task may write to it without blocking (the direct path).
    Tcp(OwnedWriteHalf),
    /// Any other stream: only the writer task writes to it.
    Stream(WriteStream),
}

/// The outbox refused an item: it was shut down, or its socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// One connection's outgoing frames. Held in an `Arc` by the connection task, by each of its
/// channels' `ChannelShared` (so by queues delivering to its consumers), by the writer task,
/// and briefly by a thread's open [`batch`]. Dropping every holder but the writer task does
/// not stop it: only [`Outbound::Shutdown`] or a socket error does.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Queued items and encoded bytes. Locked by a sender for the time it takes to queue an
    /// item, and by a flusher for one encode-and-`try_write`.
    state: Mutex<State>,
    /// Wakes the writer task (it is the only one waiting on it): something to write that no
    /// batch will flush, a partial write to finish, a new heartbeat interval, shutdown.
    wake: Notify,
}

#[derive(Debug)]
struct State {
    /// Items not yet encoded, in send order.
    items: VecDeque<Outbound>,
    /// Encoded bytes not yet written; always written before `items`.
    out: Vec<u8>,
    /// The negotiated frame_max, for cutting bodies.
    frame_max: u32,
    /// The negotiated heartbeat interval.
    heartbeat: Option<Duration>,
    /// The writer task is writing bytes it took out of `out`; nobody else may write.
    writing: bool,
    /// This outbox is in a thread's open batch, which will flush it.
    in_batch: bool,
    /// Bytes went out since the writer's heartbeat timer last fired.
    wrote: bool,
    /// Shut down (or the socket failed): sends are refused, the writer drains and stops.
    closed: bool,
    /// Plain TCP: the write half, for non-blocking writes by whoever holds the lock (clones
    /// live only while the lock is held, and in the writer task while `writing`). `None` for
    /// other streams, and once the writer task has taken it to shut it down.
    tcp: Option<Arc<OwnedWriteHalf>>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning only follows a panic elsewhere; the queue is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`. Inside a [`batch`] the outbox is written when the batch ends; otherwise
    /// the writer task is woken.
    pub(crate) fn send(self: &Arc<Self>, item: Outbound) -> Result<(), Closed> {
        let mut s = self.lock();
        if s.closed {
            return Err(Closed);
        }
        match item {
            Outbound::Tune {
                frame_max,
                heartbeat,
            } => {
                s.frame_max = frame_max;
                s.heartbeat = heartbeat;
                drop(s);
                self.wake.notify_one();
                return Ok(());
            }
            Outbound::Shutdown => {
                s.closed = true;
                drop(s);
                self.wake.notify_one();
                return Ok(());
            }
            item => s.items.push_back(item),
        }
        if s.in_batch || s.writing {
            // The batch, or the writer once its write is done, takes it from here.
            return Ok(());
        }
        if s.tcp.is_some() && join_batch(self) {
            s.in_batch = true;
            return Ok(());
        }
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// The end of a batch: encodes what is queued and writes it with one non-blocking write;
    /// whatever the socket does not take is left to the writer task.
    fn flush_now(&self) {
        let mut s = self.lock();
        s.in_batch = false;
        if s.writing || s.closed {
            // The writer task is mid-write or draining; it picks the items up.
            drop(s);
            self.wake.notify_one();
            return;
        }
        let Some(tcp) = s.tcp.clone() else {
            drop(s);
            self.wake.notify_one();
            return;
        };
        let st = &mut *s;
        encode_batch(&mut st.items, &mut st.out, st.frame_max);
        if st.out.is_empty() {
            return;
        }
        match tcp.try_write(&st.out) {
            Ok(n) => {
                st.wrote = true;
                st.out.drain(..n);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            // The writer task meets the same error on its next write and stops.
            Err(_) => {}
        }
        let rest = !st.out.is_empty() || !st.items.is_empty();
        if st.out.capacity() > 4 * BATCH_BYTES && st.out.is_empty() {
            st.out.shrink_to(16 * 1024);
        }
        drop(s);
        if rest {
            self.wake.notify_one();
        }
    }
}

/// Encodes items from the front of `items` onto `out` until `out` holds a batch's worth.
fn encode_batch(items: &mut VecDeque<Outbound>, out: &mut Vec<u8>, frame_max: u32) {
    while out.len() < BATCH_BYTES {
        let Some(item) = items.pop_front() else {
            return;
        };
        match item {
            Outbound::Raw(bytes) => out.extend_from_slice(bytes),
            Outbound::Method(channel, method) => frame::encode_method(out, channel, method),
            Outbound::Content {
                channel,
                method,
                message,
            } => {
                frame::encode_method(out, channel, method);
                frame::encode_content(out, channel, &message.properties, &message.body, frame_max);
            }
            // Handled when sent; never queued.
            Outbound::Tune { .. } | Outbound::Shutdown => {}
        }
    }
}

thread_local! {
    /// The outboxes the current thread's open batch will flush (`None`: no batch open).
    static BATCH: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// Adds `outbox` to this thread's open batch; false if none is open.
fn join_batch(outbox: &Arc<Outbox>) -> bool {
    BATCH.with(|b| match b.borrow_mut().as_mut() {
        Some(list) => {
            list.push(outbox.clone());
            true
        }
        None => false,
    })
}

/// Runs `work` (synchronous: it cannot yield, so the batch stays on this thread) with every
/// outbox it sends to collected, then writes each of them once. A batch opened inside another
/// one joins the outer batch.
pub(crate) fn batch<R>(work: impl FnOnce() -> R) -> R {
    let opened = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_some() {
            return false;
        }
        *b = Some(Vec::new());
        true
    });
    // Flushes on the way out, also if `work` panics: a batch left open would keep this
    // thread's later sends waiting for a flush that never comes.
    let _flush = opened.then_some(BatchEnd);
    work()
}

/// Closes this thread's open batch and writes its outboxes when dropped.
struct BatchEnd;

impl Drop for BatchEnd {
    fn drop(&mut self) {
        let list = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
        for outbox in list {
            outbox.flush_now();
        }
    }
}

impl Outbox {
    fn new(tcp: Option<Arc<OwnedWriteHalf>>) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                out: Vec::with_capacity(16 * 1024),
                frame_max: 131_072,
                heartbeat: None,
                writing: false,
                in_batch: false,
                wrote: false,
                closed: false,
                tcp,
            }),
            wake: Notify::new(),
        })
    }

    /// An outbox with no socket and no writer task: what is sent to it stays queued (unit
    /// tests of structures that hold one).
    #[cfg(test)]
    pub(crate) fn detached() -> Arc<Self> {
        Self::new(None)
    }
}

/// Creates a connection's outbox and its writer task (to be spawned by the caller).
pub(crate) fn outbox(write: WriteSide) -> (Arc<Outbox>, impl std::future::Future<Output = ()>) {
    let (tcp, stream) = match write {
        WriteSide::Tcp(half) => (Some(Arc::new(half)), None),
        WriteSide::Stream(stream) => (None, Some(stream)),
    };
    let outbox = Outbox::new(tcp);
    (outbox.clone(), run(outbox, stream))
}

/// The writer task: writes what no batch flushed, sends heartbeats when nothing else went out
/// for half the heartbeat interval, and on shutdown writes what is left and shuts the socket
/// down. It stops there, or when the socket fails.
async fn run(outbox: Arc<Outbox>, mut stream: Option<WriteStream>) {
    let mut spare: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut heartbeat: Option<Duration> = None;
    let timer = tokio::time::sleep_until(Instant::now() + IDLE);
    tokio::pin!(timer);
    loop {
        let (tcp, closed) = {
            let mut s = outbox.lock();
            if s.heartbeat != heartbeat {
                heartbeat = s.heartbeat;
                let next = heartbeat.map_or(IDLE, |hb| hb / 2);
                timer.as_mut().reset(Instant::now() + next);
            }
            let st = &mut *s;
            if !st.writing && st.out.is_empty() {
                encode_batch(&mut st.items, &mut st.out, st.frame_max);
            }
            if !st.out.is_empty() {
                std::mem::swap(&mut st.out, &mut spare);
                st.writing = true;
            }
            (st.tcp.clone(), st.closed)
        };
        if !spare.is_empty() {
            let written = match (&tcp, stream.as_mut()) {
                (Some(tcp), _) => write_tcp(tcp, &spare).await,
                (None, Some(stream)) => stream.write_all(&spare).await,
                (None, None) => Ok(()),
            };
            drop(tcp);
            spare.clear();
            if spare.capacity() > 4 * BATCH_BYTES {
                spare.shrink_to(16 * 1024);
            }
            let mut s = outbox.lock();
            s.writing = false;
            s.wrote = true;
            if let Err(err) = written {
                debug!(cause = %err, "socket write failed");
                s.closed = true;
                s.items.clear();
                s.tcp = None;
                return;
            }
            continue;
        }
        drop(tcp);
        if closed {
            break;
        }
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = &mut timer, if heartbeat.is_some() => {
                let interval = heartbeat.map_or(IDLE, |hb| hb / 2);
                let mut s = outbox.lock();
                if !s.wrote {
                    // Goes out ahead of nothing: the queue is empty whenever the writer idles.
                    s.items.push_back(Outbound::Raw(frame::HEARTBEAT));
                }
                s.wrote = false;
                drop(s);
                timer.as_mut().reset(Instant::now() + interval);
            }
        }
    }
    // Shut down: everything queued was written above. Take the TCP half out (no clone
    // survives outside the lock) and shut its write direction.
    let tcp = outbox.lock().tcp.take();
    if let Some(tcp) = tcp {
        match Arc::try_unwrap(tcp) {
            Ok(mut half) => {
                let _ = half.shutdown().await;
            }
            // Unreachable (see above); dropping the last clone shuts it down anyway.
            Err(shared) => drop(shared),
        }
    }
    if let Some(mut stream) = stream {
        let _ = stream.shutdown().await;
    }
}

/// Writes all of `bytes` to a TCP half shared with the direct path (which stays out while
/// the outbox is marked `writing`).
async fn write_tcp(tcp: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use amq_protocol::protocol::{basic, channel};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn open_ok(ch: u16) -> Outbound {
        Outbound::Method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        )
    }

    fn delivery(ch: u16, tag: u64, body: &[u8]) -> Outbound {
        Outbound::Content {
            channel: ch,
            method: AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "c".into(),
                delivery_tag: tag,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
            })),
            message: Arc::new(Message {
                exchange: "".into(),
                routing_key: "q".into(),
                properties: basic::AMQPProperties::default(),
                body: bytes::Bytes::copy_from_slice(body),
            }),
        }
    }

    /// What the items encode to, in order.
    fn encoded(items: Vec<Outbound>, frame_max: u32) -> Vec<u8> {
        let mut all = Vec::new();
        for item in items {
            let mut one = Vec::new();
            encode_batch(&mut VecDeque::from([item]), &mut one, frame_max);
            all.extend_from_slice(&one);
        }
        all
    }

    #[tokio::test]
    async fn batched_direct_writes_and_writer_writes_keep_send_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut client, (server, _)) = (client.unwrap(), accepted.unwrap());
        let (_read, write) = server.into_split();
        let (outbox, run) = outbox(WriteSide::Tcp(write));
        let writer = tokio::spawn(run);
        outbox
            .send(Outbound::Tune {
                frame_max: 4096,
                heartbeat: None,
            })
            .unwrap();
        let big = vec![7u8; 20_000];
        let mut expected = Vec::new();
        // Outside a batch (writer task), inside one (direct write), a body cut into frames,
        // and a batch larger than BATCH_BYTES (a remainder left to the writer).
        outbox.send(open_ok(1)).unwrap();
        expected.push(open_ok(1));
        batch(|| {
            for tag in 1..=3 {
                outbox.send(delivery(1, tag, b"hello")).unwrap();
            }
        });
        expected.extend((1..=3).map(|tag| delivery(1, tag, b"hello")));
        batch(|| {
            outbox.send(delivery(2, 1, &big)).unwrap();
            outbox.send(open_ok(3)).unwrap();
        });
        expected.push(delivery(2, 1, &big));
        expected.push(open_ok(3));
        batch(|| {
            for tag in 4..=40 {
                outbox.send(delivery(1, tag, &big)).unwrap();
            }
        });
        expected.extend((4..=40).map(|tag| delivery(1, tag, &big)));
        outbox.send(open_ok(4)).unwrap();
        expected.push(open_ok(4));
        outbox.send(Outbound::Shutdown).unwrap();
        assert_eq!(
            outbox.send(open_ok(5)),
            Err(Closed),
            "refused after shutdown"
        );
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, encoded(expected, 4096));
    }

    #[test]
    fn a_panicking_batch_does_not_stay_open() {
        let caught = std::panic::catch_unwind(|| batch(|| panic!("handler bug")));
        assert!(caught.is_err());
        assert!(BATCH.with(|b| b.borrow().is_none()));
        // And a later batch opens and closes normally.
        let outbox = Outbox::detached();
        batch(|| outbox.send(open_ok(1)).unwrap());
        assert!(BATCH.with(|b| b.borrow().is_none()));
    }
}
