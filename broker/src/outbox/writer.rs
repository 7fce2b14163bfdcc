//! The writer task of a connection's [`Outbox`]: writes what no batch flushed (TLS streams,
//! the rest of a partial write, sends from outside a batch), sends heartbeats when nothing
//! else went out for half the heartbeat interval, and on shutdown writes what is left and
//! shuts the socket down.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tracing::debug;

use super::{encode_batch, Outbound, Outbox, BATCH_BYTES};
use crate::frame;

/// How far the heartbeat timer is pushed while heartbeats are off (re-armed by `Tune`).
const IDLE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The write side of a client's byte stream, as a generic stream (TLS, in-memory pipes).
pub(crate) type WriteStream = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// The write side handed to a connection.
pub(crate) enum WriteSide {
    /// A plain TCP write half: any task may write to it without blocking (the direct path).
    Tcp(OwnedWriteHalf),
    /// Any other stream: only the writer task writes to it.
    Stream(WriteStream),
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
