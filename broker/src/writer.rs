//! The per-connection frame writer: one task that owns the socket's write half, takes
//! [`Outbound`] items from an unbounded queue, encodes as many as are queued right now into one
//! buffer and writes it with a single `write_all` — one syscall per batch, not per frame. It
//! also sends heartbeats when the connection has been quiet for half the heartbeat interval
//! (one timer per connection, re-armed when it fires, not per batch).

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::AMQPClass;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::frame;
use crate::message::Message;

/// How far the heartbeat timer is pushed while heartbeats are off (it is re-armed by `Tune`).
const IDLE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Stop adding frames to a batch beyond this many bytes (the batch is still written whole).
const BATCH_BYTES: usize = 256 * 1024;

/// Something to send to the client. Producers: the connection task, and queues delivering to
/// this connection's consumers (they hold clones of the sender in `ChannelShared`).
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
    /// Write what is queued before this, then shut the socket down and stop, even if other
    /// senders (queues holding a consumer of this connection) still exist.
    Shutdown,
    /// Negotiated tuning: body frames are cut to `frame_max`; heartbeats every `heartbeat / 2`.
    Tune {
        /// The negotiated frame_max (0 = no limit).
        frame_max: u32,
        /// The negotiated heartbeat interval (`None` = disabled).
        heartbeat: Option<Duration>,
    },
}

/// The write side of a client's byte stream: a plain TCP write half or a TLS stream's write
/// half (boxed; one write per batch, so the virtual call is negligible).
pub(crate) type WriteStream = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// Runs the writer until every sender is dropped (then flushes and shuts the socket down) or
/// the socket fails.
pub(crate) async fn run(mut socket: WriteStream, mut rx: mpsc::UnboundedReceiver<Outbound>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut frame_max: u32 = 131_072;
    let mut heartbeat: Option<Duration> = None;
    // One heartbeat timer for the connection's life, re-armed only when it fires (a timeout
    // around every `recv` registered and removed a timer-wheel entry per batch written). It
    // fires `heartbeat / 2` after the last write at the earliest; then a heartbeat goes out
    // only if nothing else was written meanwhile.
    let mut last_write = Instant::now();
    let timer = tokio::time::sleep_until(last_write + IDLE);
    tokio::pin!(timer);
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => item,
            _ = &mut timer, if heartbeat.is_some() => {
                match heartbeat {
                    Some(interval) => {
                        let due = last_write + interval / 2;
                        if due <= Instant::now() {
                            frame::encode_heartbeat(&mut buf);
                            if write(&mut socket, &mut buf).await.is_err() {
                                return;
                            }
                            last_write = Instant::now();
                            timer.as_mut().reset(last_write + interval / 2);
                        } else {
                            timer.as_mut().reset(due);
                        }
                    }
                    None => timer.as_mut().reset(Instant::now() + IDLE),
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                Outbound::Raw(bytes) => buf.extend_from_slice(bytes),
                Outbound::Method(channel, method) => {
                    frame::encode_method(&mut buf, channel, method)
                }
                Outbound::Content {
                    channel,
                    method,
                    message,
                } => {
                    frame::encode_method(&mut buf, channel, method);
                    frame::encode_content(
                        &mut buf,
                        channel,
                        &message.properties,
                        &message.body,
                        frame_max,
                    );
                }
                Outbound::Tune {
                    frame_max: fm,
                    heartbeat: hb,
                } => {
                    frame_max = fm;
                    heartbeat = hb;
                    if let Some(interval) = hb {
                        timer.as_mut().reset(last_write + interval / 2);
                    }
                }
                Outbound::Shutdown => {
                    let _ = write(&mut socket, &mut buf).await;
                    let _ = socket.shutdown().await;
                    return;
                }
            }
            if buf.len() < BATCH_BYTES {
                item = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if write(&mut socket, &mut buf).await.is_err() {
                return;
            }
            last_write = Instant::now();
        }
    }
    let _ = socket.shutdown().await;
}

async fn write(socket: &mut WriteStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let result = socket.write_all(buf).await;
    if let Err(err) = &result {
        debug!(cause = %err, "socket write failed");
    }
    buf.clear();
    if buf.capacity() > 4 * BATCH_BYTES {
        buf.shrink_to(16 * 1024);
    }
    result
}
