//! The bench's own minimal AMQP 0-9-1 client for the hot paths of `throughput`, `fanout` and
//! `backlog` (`--client raw`, the default): one connection, channel 1, batches of publishes
//! written with one syscall, deliveries parsed in place from the receive buffer. Topology
//! (declare, bind, delete) still goes through lapin. Why it exists: see [`crate::raw_frame`].
//!
//! - [`RawConn`]: the handshake (protocol header, start/start-ok with PLAIN, tune/tune-ok with
//!   heartbeats off, open, channel.open) and method-level reads.
//! - [`run_raw_producer`]: publishes in batches; with confirms, a reader task counts
//!   `basic.ack`s (single and `multiple`) and the publisher keeps at most WINDOW unconfirmed.
//! - [`RawConsumer`]: `basic.qos` + `basic.consume`, then reads deliveries and sends acks (one
//!   write per read batch).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use crate::amqp::stamp_body;
use crate::consumer::{ConsumerOutcome, ConsumerPlan, DeliveryTally};
use crate::error::{BenchError, Result};
use crate::producer::{ProducerJob, ProducerOutcome};
use crate::raw_frame::{self as rf, method, Args, Frame};
use crate::stats::{merge_into, Counters, SharedLatency};

/// The one channel the client uses.
pub(crate) const CH: u16 = 1;
/// Largest frame we accept or send (the broker may ask for less).
const OUR_FRAME_MAX: u32 = 131_072;
/// Messages per write when publishing.
const BATCH: u64 = 256;

/// A receive buffer: bytes read but not yet parsed start at `start`.
#[derive(Debug, Default)]
pub(crate) struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
}

impl RecvBuf {
    /// Reads more bytes; an orderly EOF is an error (the broker closed the socket).
    pub(crate) async fn fill<R: AsyncReadExt + Unpin>(&mut self, reader: &mut R) -> Result<()> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(64 * 1024);
        if reader.read_buf(&mut self.buf).await? == 0 {
            return Err(BenchError::Protocol("broker closed the socket".into()));
        }
        Ok(())
    }

    /// The next complete frame, if any, and marks it consumed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        match rf::parse_frame(&self.buf[self.start..])? {
            Some((f, n)) => {
                if f.channel != 0 && f.channel != CH {
                    return Err(BenchError::Protocol(format!(
                        "frame on unopened channel {}",
                        f.channel
                    )));
                }
                let at = self.start;
                self.start += n;
                // Re-slice to tie the frame to `self.buf` after moving `start`.
                Ok(rf::parse_frame(&self.buf[at..at + n])?.map(|(f, _)| f))
            }
            None => Ok(None),
        }
    }
}

/// Turns a broker-sent `connection.close` / `channel.close` into an error.
pub(crate) fn close_error(id: (u16, u16), mut args: Args<'_>) -> BenchError {
    let code = args.u16().unwrap_or(0);
    let text = args
        .shortstr()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let what = if id == method::CHANNEL_CLOSE {
        "channel"
    } else {
        "connection"
    };
    BenchError::Protocol(format!("broker closed the {what}: {code} {text}"))
}

/// An open connection with channel 1 open.
#[derive(Debug)]
pub(crate) struct RawConn {
    /// The socket.
    pub(crate) stream: TcpStream,
    /// Bytes read and not yet parsed.
    pub(crate) recv: RecvBuf,
    /// Negotiated frame-max.
    pub(crate) frame_max: usize,
}

impl RawConn {
    /// Connects to `url` and opens channel 1.
    pub(crate) async fn open(url: &str) -> Result<Self> {
        let uri: lapin::uri::AMQPUri = url.parse().map_err(BenchError::Protocol)?;
        let stream = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port)).await?;
        stream.set_nodelay(true)?;
        let mut conn = RawConn {
            stream,
            recv: RecvBuf::default(),
            frame_max: OUR_FRAME_MAX as usize,
        };
        conn.stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        conn.expect(method::CONNECTION_START).await?;
        let user = &uri.authority.userinfo;
        let mut out = Vec::new();
        rf::method_frame(&mut out, 0, method::CONNECTION_START_OK, |b| {
            rf::empty_table(b); // client-properties
            rf::shortstr(b, "PLAIN");
            rf::longstr(
                b,
                format!("\0{}\0{}", user.username, user.password).as_bytes(),
            );
            rf::shortstr(b, "en_US");
        });
        conn.stream.write_all(&out).await?;
        let tune = conn.expect(method::CONNECTION_TUNE).await?;
        let mut a = Args::of(&tune)?.1;
        let channel_max = a.u16()?;
        let server_frame_max = a.u32()?;
        let frame_max = match server_frame_max {
            0 => OUR_FRAME_MAX,
            n => n.min(OUR_FRAME_MAX),
        };
        conn.frame_max = frame_max as usize;
        let vhost = if uri.vhost.is_empty() {
            "/"
        } else {
            uri.vhost.as_str()
        };
        out.clear();
        rf::method_frame(&mut out, 0, method::CONNECTION_TUNE_OK, |b| {
            b.extend_from_slice(&channel_max.clamp(1, 1).to_be_bytes());
            b.extend_from_slice(&frame_max.to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        });
        rf::method_frame(&mut out, 0, method::CONNECTION_OPEN, |b| {
            rf::shortstr(b, vhost);
            rf::shortstr(b, "");
            b.push(0);
        });
        conn.stream.write_all(&out).await?;
        conn.expect(method::CONNECTION_OPEN_OK).await?;
        out.clear();
        rf::method_frame(&mut out, CH, method::CHANNEL_OPEN, |b| rf::shortstr(b, ""));
        conn.stream.write_all(&out).await?;
        conn.expect(method::CHANNEL_OPEN_OK).await?;
        Ok(conn)
    }

    /// Sends one method and waits for its reply.
    async fn call(
        &mut self,
        id: (u16, u16),
        args: impl FnOnce(&mut Vec<u8>),
        reply: (u16, u16),
    ) -> Result<()> {
        let mut out = Vec::new();
        rf::method_frame(&mut out, CH, id, args);
        self.stream.write_all(&out).await?;
        self.expect(reply).await.map(|_| ())
    }

    /// Waits for method `want` and returns its payload; heartbeats are skipped, a close is an
    /// error, anything else is unexpected at this stage.
    async fn expect(&mut self, want: (u16, u16)) -> Result<Vec<u8>> {
        loop {
            while let Some(f) = self.recv.next_frame()? {
                if f.ty == rf::FRAME_HEARTBEAT {
                    continue;
                }
                if f.ty != rf::FRAME_METHOD {
                    return Err(BenchError::Protocol(format!(
                        "unexpected frame type {} during setup",
                        f.ty
                    )));
                }
                let (id, args) = Args::of(f.payload)?;
                if id == want {
                    return Ok(f.payload.to_vec());
                }
                if id == method::CONNECTION_CLOSE || id == method::CHANNEL_CLOSE {
                    return Err(close_error(id, args));
                }
                return Err(BenchError::Protocol(format!(
                    "expected method {want:?}, got {id:?}"
                )));
            }
            self.recv.fill(&mut self.stream).await?;
        }
    }

    /// `basic.qos` with a prefetch count (per consumer).
    pub(crate) async fn basic_qos(&mut self, prefetch: u16) -> Result<()> {
        self.call(
            method::BASIC_QOS,
            |b| {
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&prefetch.to_be_bytes());
                b.push(0);
            },
            method::BASIC_QOS_OK,
        )
        .await
    }

    /// `basic.consume` on `queue`, waiting for `consume-ok`.
    pub(crate) async fn basic_consume(
        &mut self,
        queue: &str,
        tag: &str,
        no_ack: bool,
    ) -> Result<()> {
        self.call(
            method::BASIC_CONSUME,
            |b| {
                b.extend_from_slice(&0u16.to_be_bytes());
                rf::shortstr(b, queue);
                rf::shortstr(b, tag);
                b.push(if no_ack { 0b10 } else { 0 });
                rf::empty_table(b);
            },
            method::BASIC_CONSUME_OK,
        )
        .await
    }

    /// Sends `connection.close` and waits (briefly) for `close-ok`.
    pub(crate) async fn close(mut self) {
        let mut out = Vec::new();
        rf::connection_close(&mut out);
        if self.stream.write_all(&out).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    while let Ok(Some(f)) = self.recv.next_frame() {
                        if f.ty == rf::FRAME_METHOD
                            && Args::of(f.payload).map(|(id, _)| id).ok()
                                == Some(method::CONNECTION_CLOSE_OK)
                        {
                            return;
                        }
                    }
                    if self.recv.fill(&mut self.stream).await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
    }
}

/// Publisher-confirm bookkeeping: which of the published delivery tags are confirmed.
#[derive(Debug, Default)]
struct ConfirmTracker {
    /// Tags `base + i` for each entry; `true` once confirmed.
    window: VecDeque<bool>,
    /// Delivery tag of `window[0]` (tags start at 1).
    base: u64,
}

impl ConfirmTracker {
    /// Marks `tag` (or every tag up to it, with `multiple`) confirmed; returns how many tags at
    /// the front became contiguous-confirmed.
    fn ack(&mut self, tag: u64, multiple: bool) -> u64 {
        if self.base == 0 {
            self.base = 1;
        }
        if tag < self.base {
            return 0;
        }
        let idx = (tag - self.base) as usize;
        if self.window.len() <= idx {
            self.window.resize(idx + 1, false);
        }
        if multiple {
            for v in self.window.iter_mut().take(idx + 1) {
                *v = true;
            }
        } else {
            self.window[idx] = true;
        }
        let mut n = 0;
        while self.window.front() == Some(&true) {
            self.window.pop_front();
            self.base += 1;
            n += 1;
        }
        n
    }
}

/// Reads a publisher's socket: counts confirms, fails on nack or close.
async fn producer_reader(
    mut rd: OwnedReadHalf,
    mut recv: RecvBuf,
    confirmed: Arc<AtomicU64>,
    counters: Arc<Counters>,
    notify: Arc<Notify>,
) -> Result<()> {
    let mut tracker = ConfirmTracker::default();
    loop {
        let mut newly = 0;
        while let Some(f) = recv.next_frame()? {
            if f.ty != rf::FRAME_METHOD {
                continue;
            }
            let (id, mut args) = Args::of(f.payload)?;
            if id == method::BASIC_ACK {
                let tag = args.u64()?;
                let multiple = args.u8()? & 1 == 1;
                newly += tracker.ack(tag, multiple);
            } else if id == method::BASIC_NACK {
                return Err(BenchError::Nacked);
            } else if id == method::CONNECTION_CLOSE_OK {
                return Ok(());
            } else if id == method::CONNECTION_CLOSE || id == method::CHANNEL_CLOSE {
                return Err(close_error(id, args));
            }
        }
        if newly > 0 {
            confirmed.fetch_add(newly, Ordering::Relaxed);
            counters.confirmed.fetch_add(newly, Ordering::Relaxed);
            notify.notify_one();
        }
        recv.fill(&mut rd).await?;
    }
}

/// Publishes with the bench's own client; same contract as [`crate::producer::run_producer`].
pub(crate) async fn run_raw_producer(job: ProducerJob) -> Result<ProducerOutcome> {
    let ProducerJob {
        url,
        target,
        flow,
        bound,
        counters,
        stop,
        ..
    } = job;
    let mut conn = RawConn::open(&url).await?;
    let confirms = flow.confirm > 0;
    if confirms {
        conn.call(
            method::CONFIRM_SELECT,
            |b| b.push(0),
            method::CONFIRM_SELECT_OK,
        )
        .await?;
    }
    let frame_max = conn.frame_max;
    let RawConn { stream, recv, .. } = conn;
    let (rd, mut wr) = stream.into_split();
    let confirmed = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    // Owned by this function: aborted on every return path below, or joined after close.
    let mut reader = tokio::spawn(producer_reader(
        rd,
        recv,
        Arc::clone(&confirmed),
        Arc::clone(&counters),
        Arc::clone(&notify),
    ));
    let window = flow.confirm as u64;
    let limit = flow.count.unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let mut out = Vec::with_capacity(256 * 1024);
    let result: Result<()> = async {
        while seq < limit && !stop.load(Ordering::Relaxed) {
            // How many we may publish now: backlog bound and confirm window.
            let mut allowed = (limit - seq).min(BATCH);
            if bound.max > 0 {
                let room = bound.max.saturating_sub(bound.queued(&counters)) / bound.copies.max(1);
                allowed = allowed.min(room);
            }
            if confirms {
                allowed =
                    allowed.min(window.saturating_sub(seq - confirmed.load(Ordering::Relaxed)));
            }
            if allowed == 0 {
                if reader.is_finished() {
                    break;
                }
                let wait = if confirms {
                    Duration::from_millis(1)
                } else {
                    Duration::from_micros(200)
                };
                let _ = tokio::time::timeout(wait, notify.notified()).await;
                continue;
            }
            out.clear();
            for _ in 0..allowed {
                let body = stamp_body(flow.size, seq);
                rf::publish(
                    &mut out,
                    CH,
                    &target.exchange,
                    &target.routing_key,
                    flow.persistent,
                    &body,
                    frame_max,
                );
                seq += 1;
            }
            counters.published.fetch_add(allowed, Ordering::Relaxed);
            wr.write_all(&out).await?;
        }
        if confirms {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while confirmed.load(Ordering::Relaxed) < seq {
                if reader.is_finished() || tokio::time::Instant::now() > deadline {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(5), notify.notified()).await;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        reader.abort();
        return Err(e);
    }
    if reader.is_finished() {
        (&mut reader).await??;
        return Err(BenchError::Protocol(
            "publisher connection ended early".into(),
        ));
    }
    if confirms && confirmed.load(Ordering::Relaxed) < seq {
        reader.abort();
        return Err(BenchError::Timeout(format!(
            "{} of {seq} publishes unconfirmed after 120 s",
            seq - confirmed.load(Ordering::Relaxed)
        )));
    }
    out.clear();
    rf::connection_close(&mut out);
    let _ = wr.write_all(&out).await;
    if tokio::time::timeout(Duration::from_secs(2), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    Ok(ProducerOutcome { published: seq })
}

/// Where a delivery is in its frames.
#[derive(Debug, Clone, Copy)]
enum Incoming {
    /// Between messages.
    Idle,
    /// `basic.deliver` seen, content header next.
    Header { tag: u64, redelivered: bool },
    /// Body frames next, `remaining` bytes to go; `head` keeps the first 16 body bytes.
    Body {
        tag: u64,
        redelivered: bool,
        remaining: u64,
        head: [u8; 16],
        head_len: usize,
    },
}

/// A consumer registered with the broker, not yet running.
#[derive(Debug)]
pub(crate) struct RawConsumer {
    conn: RawConn,
    plan: ConsumerPlan,
}

impl RawConsumer {
    /// Connects, sets the prefetch (manual ack) and issues `basic.consume`.
    pub(crate) async fn start(url: &str, id: usize, plan: ConsumerPlan) -> Result<Self> {
        let mut conn = RawConn::open(url).await?;
        if !plan.autoack {
            conn.basic_qos(plan.prefetch).await?;
        }
        conn.basic_consume(&plan.queue, &format!("lepus-bench-{id}"), plan.autoack)
            .await?;
        Ok(RawConsumer { conn, plan })
    }

    /// Consumes until `stop` turns true (or the broker cancels the consumer); same contract as
    /// [`crate::consumer::ReadyConsumer::run`].
    pub(crate) async fn run(
        self,
        counters: Arc<Counters>,
        latency: SharedLatency,
        mut stop: watch::Receiver<bool>,
    ) -> Result<ConsumerOutcome> {
        let RawConsumer { mut conn, plan } = self;
        let mut tally = DeliveryTally::new();
        let mut state = Incoming::Idle;
        let mut acks = Vec::new();
        let mut cancelled = false;
        'outer: loop {
            let mut batch = 0u64;
            while let Some(f) = conn.recv.next_frame()? {
                let done = match (f.ty, state) {
                    (rf::FRAME_METHOD, _) => {
                        let (id, mut args) = Args::of(f.payload)?;
                        if id == method::BASIC_DELIVER {
                            args.shortstr()?; // consumer-tag
                            let tag = args.u64()?;
                            let redelivered = args.u8()? & 1 == 1;
                            state = Incoming::Header { tag, redelivered };
                        } else if id == method::BASIC_CANCEL {
                            cancelled = true;
                        } else if id == method::CONNECTION_CLOSE || id == method::CHANNEL_CLOSE {
                            return Err(close_error(id, args));
                        }
                        None
                    }
                    (rf::FRAME_HEADER, Incoming::Header { tag, redelivered }) => {
                        let remaining = rf::header_body_size(f.payload)?;
                        if remaining == 0 {
                            Some((tag, redelivered, [0u8; 16], 0))
                        } else {
                            state = Incoming::Body {
                                tag,
                                redelivered,
                                remaining,
                                head: [0; 16],
                                head_len: 0,
                            };
                            None
                        }
                    }
                    (
                        rf::FRAME_BODY,
                        Incoming::Body {
                            tag,
                            redelivered,
                            remaining,
                            mut head,
                            head_len,
                        },
                    ) => {
                        let take = (16 - head_len).min(f.payload.len());
                        head[head_len..head_len + take].copy_from_slice(&f.payload[..take]);
                        let remaining = remaining.saturating_sub(f.payload.len() as u64);
                        if remaining == 0 {
                            Some((tag, redelivered, head, head_len + take))
                        } else {
                            state = Incoming::Body {
                                tag,
                                redelivered,
                                remaining,
                                head,
                                head_len: head_len + take,
                            };
                            None
                        }
                    }
                    (rf::FRAME_HEARTBEAT, _) => None,
                    (ty, _) => {
                        return Err(BenchError::Protocol(format!(
                            "unexpected frame type {ty} in a delivery"
                        )))
                    }
                };
                if let Some((tag, redelivered, head, head_len)) = done {
                    state = Incoming::Idle;
                    batch += 1;
                    if let Some(multiple) = tally.record(&plan, &head[..head_len], tag, redelivered)
                    {
                        rf::basic_ack(&mut acks, CH, tag, multiple);
                    }
                }
            }
            if batch > 0 {
                counters.delivered(batch);
            }
            if !acks.is_empty() {
                conn.stream.write_all(&acks).await?;
                acks.clear();
            }
            if cancelled {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break 'outer,
                r = conn.recv.fill(&mut conn.stream) => r?,
            }
        }
        if let Some(last_tag) = tally.last_unacked() {
            rf::basic_ack(&mut acks, CH, last_tag, true);
            conn.stream.write_all(&acks).await?;
        }
        merge_into(&latency, &tally.latency);
        conn.close().await;
        Ok(tally.outcome)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn confirm_tracker_counts_contiguous_acks() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.ack(2, false), 0); // 1 still open
        assert_eq!(t.ack(1, false), 2);
        assert_eq!(t.ack(5, true), 3); // 3, 4, 5
        assert_eq!(t.ack(5, false), 0); // duplicate
        assert_eq!(t.ack(7, false), 0);
        assert_eq!(t.ack(6, true), 2);
        assert_eq!(t.base, 8);
    }
}
