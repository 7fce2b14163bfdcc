//! `rpc --impl raw`: the echo RPC pair on the bench's own AMQP client ([`crate::raw_client`]),
//! so the round trip measures the broker rather than a client library's thread hops. Same
//! shape as [`crate::rpc_lapin`]: the server consumes the request queue with manual ack and
//! publishes each reply to `reply_to` with the request's `correlation_id`, then acks (both in
//! the write that follows the read); a caller's requests go through one writer task that
//! coalesces whatever is queued into one write; it consumes direct reply-to
//! (`amq.rabbitmq.reply-to`, no-ack) on its one channel and matches replies to calls by
//! correlation id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{BenchError, Result};
use crate::raw_client::{close_error, RawConn, CH};
use crate::raw_frame::{self as rf, method, Args, Frame, Props};
use crate::rpc::{PendingCalls, RpcCaller};

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// One whole delivery.
#[derive(Debug)]
struct Delivery {
    tag: u64,
    correlation_id: Option<Vec<u8>>,
    reply_to: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Builds whole deliveries out of `basic.deliver`, content header and body frames.
#[derive(Debug, Default)]
struct Assembler {
    /// The delivery being read, and whether its header has arrived.
    partial: Option<(Delivery, Option<u64>)>,
}

impl Assembler {
    /// Feeds one frame; returns a delivery once its last body byte arrived. A broker-sent
    /// close or cancel is an error.
    fn push(&mut self, f: Frame<'_>) -> Result<Option<Delivery>> {
        match f.ty {
            rf::FRAME_METHOD => {
                let (id, mut args) = Args::of(f.payload)?;
                if id == method::BASIC_DELIVER {
                    args.shortstr()?;
                    let tag = args.u64()?;
                    let d = Delivery {
                        tag,
                        correlation_id: None,
                        reply_to: None,
                        body: Vec::new(),
                    };
                    self.partial = Some((d, None));
                } else if id == method::CONNECTION_CLOSE || id == method::CHANNEL_CLOSE {
                    return Err(close_error(id, args));
                } else if id == method::BASIC_CANCEL {
                    return Err(BenchError::Protocol(
                        "the broker cancelled the consumer".into(),
                    ));
                }
                Ok(None)
            }
            rf::FRAME_HEADER => {
                let Some((d, remaining)) = self.partial.as_mut() else {
                    return Err(BenchError::Protocol(
                        "content header without basic.deliver".into(),
                    ));
                };
                let (size, corr, reply_to) = rf::header_rpc_fields(f.payload)?;
                d.correlation_id = corr.map(<[u8]>::to_vec);
                d.reply_to = reply_to.map(<[u8]>::to_vec);
                *remaining = Some(size);
                Ok(self.take_if_done())
            }
            rf::FRAME_BODY => {
                let Some((d, Some(remaining))) = self.partial.as_mut() else {
                    return Err(BenchError::Protocol(
                        "body frame without content header".into(),
                    ));
                };
                d.body.extend_from_slice(f.payload);
                *remaining = remaining.saturating_sub(f.payload.len() as u64);
                Ok(self.take_if_done())
            }
            _ => Ok(None),
        }
    }

    fn take_if_done(&mut self) -> Option<Delivery> {
        if matches!(self.partial, Some((_, Some(0)))) {
            self.partial.take().map(|(d, _)| d)
        } else {
            None
        }
    }
}

/// The echo server on the bench's own client.
#[derive(Debug)]
pub(crate) struct RawRpcServer {
    /// The serve loop; it ends when the stop signal passed to [`RawRpcServer::start`] is set.
    task: JoinHandle<Result<u64>>,
}

impl RawRpcServer {
    /// Connects, consumes `queue` (already declared) with `prefetch`, serves until `stop`.
    pub(crate) async fn start(
        url: &str,
        queue: &str,
        prefetch: u16,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Self> {
        let mut conn = RawConn::open(url).await?;
        conn.basic_qos(prefetch).await?;
        conn.basic_consume(queue, "lepus-bench-rpc-server", false)
            .await?;
        let task = tokio::spawn(async move {
            let mut asm = Assembler::default();
            let mut out = Vec::new();
            let mut served = 0u64;
            loop {
                while let Some(f) = conn.recv.next_frame()? {
                    let Some(d) = asm.push(f)? else { continue };
                    let (Some(reply_to), Some(corr)) = (&d.reply_to, &d.correlation_id) else {
                        tracing::warn!(
                            delivery_tag = d.tag,
                            "request without reply_to/correlation_id"
                        );
                        rf::basic_ack(&mut out, CH, d.tag, false);
                        continue;
                    };
                    let props = Props {
                        correlation_id: Some(&String::from_utf8_lossy(corr)),
                        ..Props::default()
                    };
                    rf::publish_with(
                        &mut out,
                        CH,
                        "",
                        &String::from_utf8_lossy(reply_to),
                        props,
                        &d.body,
                        conn.frame_max,
                    );
                    rf::basic_ack(&mut out, CH, d.tag, false);
                    served += 1;
                }
                if !out.is_empty() {
                    conn.stream.write_all(&out).await?;
                    out.clear();
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    r = conn.recv.fill(&mut conn.stream) => r?,
                }
            }
            conn.close().await;
            Ok(served)
        });
        Ok(RawRpcServer { task })
    }

    /// Waits for the server to stop; returns the requests it served.
    pub(crate) async fn join(self) -> Result<u64> {
        self.task.await?
    }
}

/// Writes what the calls queue, coalescing every request already waiting into one syscall
/// (as lapin's I/O loop does); ends when every sender is dropped or a write fails.
async fn request_writer(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut out = Vec::new();
    while let Some(first) = rx.recv().await {
        out.clear();
        out.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            out.extend_from_slice(&more);
        }
        if let Err(err) = wr.write_all(&out).await {
            tracing::debug!(cause = %err, "rpc caller write failed");
            return;
        }
    }
}

/// A caller on the bench's own client: one connection, many calls in flight.
pub(crate) struct RawRpcCaller {
    /// Frames of each request go to the writer task ([`request_writer`]), which owns the
    /// socket's write half; `None` once closed.
    requests: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// The writer task; awaited (briefly) by [`RpcCaller::close`].
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Shared with the reader task.
    pending: Arc<PendingCalls>,
    queue: String,
    frame_max: usize,
    /// Reads replies into `pending`; aborted by [`RpcCaller::close`].
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for RawRpcCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRpcCaller")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl RawRpcCaller {
    /// Connects and consumes direct reply-to.
    pub(crate) async fn connect(url: &str, queue: &str) -> Result<Self> {
        let mut conn = RawConn::open(url).await?;
        conn.basic_consume(DIRECT_REPLY_TO, "", true)
            .await
            .map_err(|e| {
                BenchError::Protocol(format!("direct reply-to refused ({e}); use --impl lapin"))
            })?;
        let frame_max = conn.frame_max;
        let RawConn {
            stream, mut recv, ..
        } = conn;
        let (mut rd, wr) = stream.into_split();
        let pending = Arc::new(PendingCalls::default());
        let routes = Arc::clone(&pending);
        let reader = tokio::spawn(async move {
            let mut asm = Assembler::default();
            let res: Result<()> = async {
                loop {
                    while let Some(f) = recv.next_frame()? {
                        let Some(d) = asm.push(f)? else { continue };
                        let id = d
                            .correlation_id
                            .as_deref()
                            .and_then(|c| std::str::from_utf8(c).ok())
                            .and_then(|c| c.parse::<u64>().ok());
                        routes.complete(id, d.body);
                    }
                    recv.fill(&mut rd).await?;
                }
            }
            .await;
            if let Err(e) = res {
                tracing::debug!(cause = %e, "rpc caller connection ended");
            }
            routes.fail_all();
        });
        let (requests, queued) = mpsc::unbounded_channel();
        let writer = tokio::spawn(request_writer(wr, queued));
        Ok(RawRpcCaller {
            requests: Mutex::new(Some(requests)),
            writer: Mutex::new(Some(writer)),
            pending,
            queue: queue.to_owned(),
            frame_max,
            reader,
        })
    }

    async fn call_inner(&self, body: Vec<u8>) -> Result<Vec<u8>> {
        let (id, reply) = self.pending.register();
        let mut out = Vec::with_capacity(128 + body.len());
        let corr = id.to_string();
        let props = Props {
            correlation_id: Some(&corr),
            reply_to: Some(DIRECT_REPLY_TO),
            ..Props::default()
        };
        rf::publish_with(&mut out, CH, "", &self.queue, props, &body, self.frame_max);
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(out).is_ok());
        let sent = if sent {
            Ok(())
        } else {
            Err(BenchError::Protocol("caller connection closed".into()))
        };
        self.pending
            .wait(id, sent, reply, || {
                BenchError::Protocol("caller connection ended".into())
            })
            .await
    }
}

impl RpcCaller for RawRpcCaller {
    fn call(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(self.call_inner(body))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut out = Vec::new();
            rf::connection_close(&mut out);
            // Queue the close behind any request, then drop the sender so the writer ends.
            let tx = self
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(tx) = tx {
                let _ = tx.send(out);
            }
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = writer {
                let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.reader.abort();
        })
    }
}
