//! The `rpc` scenario: `--callers` connections, each with `--in-flight` calls outstanding,
//! against an echo server on a fresh queue; reports calls/s and the round-trip latency.
//!
//! The implementation under test is behind [`RpcCaller`] (the client side) plus a server
//! started before the callers: `--impl lapin` is [`crate::rpc_lapin`], the baseline the Lepus
//! stub ([`crate::rpc_lepus`], `--impl lepus`) must stay within 10% of (issue 3 "Done means" 4).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::{oneshot, watch};

use crate::amqp::{connect, delete_queues, run_prefix, stamp_body};
use crate::cli::{Cli, RpcArgs, RpcImpl};
use crate::error::{BenchError, Result};
use crate::proc_stat::ResourceProbe;
use crate::raw_rpc::{RawRpcCaller, RawRpcServer};
use crate::report::{Report, Tally};
use crate::rpc_lapin::{LapinCaller, LapinServer, Wire};
use crate::rpc_lepus::{self, LepusCaller, LepusServer, Stub};
use crate::stats::{merge_into, now_ns, spawn_progress, stop_after, Counters, Latency};

/// The client half of an RPC implementation: many calls may run at once on one caller.
pub(crate) trait RpcCaller: Send + Sync + 'static {
    /// Sends `body` and resolves to the reply body.
    fn call(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>>;
    /// Closes the caller's connection.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// How long one call may wait for its reply.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls of one caller waiting for their reply, by correlation id (a counter). The caller
/// registers a call before sending its request and waits on it ([`PendingCalls::wait`]); its
/// reply reader task completes it ([`PendingCalls::complete`]), or, when the connection ends,
/// drops them all so that their calls fail at once ([`PendingCalls::fail_all`]).
#[derive(Debug, Default)]
pub(crate) struct PendingCalls {
    calls: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU64,
}

impl PendingCalls {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Vec<u8>>>> {
        // A panic while holding the lock leaves the map consistent: take it anyway.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new call: its correlation id and where its reply will arrive.
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<Vec<u8>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls().insert(id, tx);
        (id, rx)
    }

    /// Hands a reply to the call `id` names (a reply for no known call is dropped).
    pub(crate) fn complete(&self, id: Option<u64>, body: Vec<u8>) {
        let waiter = id.and_then(|id| self.calls().remove(&id));
        if let Some(tx) = waiter {
            let _ = tx.send(body);
        }
    }

    /// Fails every call still waiting: dropping its sender ends its wait.
    pub(crate) fn fail_all(&self) {
        self.calls().clear();
    }

    /// The reply to call `id` once `sent` (the outcome of sending its request) is `Ok`:
    /// `ended()` when the reader dropped it, a timeout after [`CALL_TIMEOUT`]. A call that fails
    /// removes its own entry.
    pub(crate) async fn wait(
        &self,
        id: u64,
        sent: Result<()>,
        reply: oneshot::Receiver<Vec<u8>>,
        ended: fn() -> BenchError,
    ) -> Result<Vec<u8>> {
        let res = match sent {
            Ok(()) => match tokio::time::timeout(CALL_TIMEOUT, reply).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(ended()),
                Err(_) => Err(BenchError::Timeout(format!("no reply in {CALL_TIMEOUT:?}"))),
            },
            Err(e) => Err(e),
        };
        if res.is_err() {
            self.calls().remove(&id);
        }
        res
    }
}

/// Runs `rpc`.
pub(crate) async fn rpc(cli: &Cli, args: &RpcArgs) -> Result<Report> {
    if args.callers == 0 || args.in_flight == 0 {
        return Err(BenchError::BadOptions(
            "--callers and --in-flight must be ≥ 1".into(),
        ));
    }
    let prefix = format!("{}-", run_prefix());
    let setup = connect(&cli.url, "setup").await?;
    let ch = setup.create_channel().await?;
    let (queue, result) = match args.implementation {
        RpcImpl::Lapin | RpcImpl::LapinWire => {
            let queue = declare_server_queue(&ch, &prefix).await?;
            let wire = if args.implementation == RpcImpl::LapinWire {
                Wire::Lepus
            } else {
                Wire::Minimal
            };
            let result = run_lapin(cli, args, &queue, wire).await;
            (queue, result)
        }
        RpcImpl::Raw => {
            let queue = declare_server_queue(&ch, &prefix).await?;
            let result = run_raw(cli, args, &queue).await;
            (queue, result)
        }
        RpcImpl::Lepus | RpcImpl::LepusService => {
            let stub = if args.implementation == RpcImpl::LepusService {
                Stub::Service
            } else {
                Stub::Function
            };
            // The Lepus worker declares its own queue, as a user's would.
            let result = run_lepus(cli, args, &prefix, stub).await;
            (rpc_lepus::queue_name(&prefix), result)
        }
    };
    delete_queues(&ch, std::slice::from_ref(&queue)).await;
    let _ = setup.close(200, "bench done".into()).await;
    let mut report = result?;
    report.params = serde_json::to_value(args)?;
    Ok(report)
}

/// Declares the queue the lapin and raw servers consume, `{prefix}rpc`, and returns its name.
/// (The Lepus worker declares its own queue, as a user's would.)
async fn declare_server_queue(ch: &Channel, prefix: &str) -> Result<String> {
    let queue = format!("{prefix}rpc");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(queue)
}

/// The server prefetch: `--prefetch`, or every call that can be in flight.
fn server_prefetch(args: &RpcArgs) -> u16 {
    if args.prefetch > 0 {
        args.prefetch
    } else {
        u16::try_from(args.callers * args.in_flight).unwrap_or(u16::MAX)
    }
}

async fn run_raw(cli: &Cli, args: &RpcArgs, queue: &str) -> Result<Report> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = RawRpcServer::start(&cli.url, queue, server_prefetch(args), stop_rx).await?;
    let mut callers: Vec<Arc<dyn RpcCaller>> = Vec::new();
    for _ in 0..args.callers {
        callers.push(Arc::new(RawRpcCaller::connect(&cli.url, queue).await?));
    }
    let res = measure(cli, args, callers).await;
    stop_tx.send_replace(true);
    let served = server.join().await?;
    Ok(with_server_figures(res?, "direct", served))
}

async fn run_lepus(cli: &Cli, args: &RpcArgs, prefix: &str, stub: Stub) -> Result<Report> {
    let prefetch = server_prefetch(args);
    let server =
        LepusServer::start(&cli.url, prefix, prefetch, usize::from(prefetch), stub).await?;
    let mut callers: Vec<Arc<dyn RpcCaller>> = Vec::new();
    for _ in 0..args.callers {
        callers.push(Arc::new(
            LepusCaller::connect(&cli.url, prefix, stub).await?,
        ));
    }
    let res = measure(cli, args, callers).await;
    server.stop().await?;
    res
}

async fn run_lapin(cli: &Cli, args: &RpcArgs, queue: &str, wire: Wire) -> Result<Report> {
    let prefetch = server_prefetch(args);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = LapinServer::start(&cli.url, queue, prefetch, wire, stop_rx).await?;
    let mut callers: Vec<Arc<dyn RpcCaller>> = Vec::new();
    let mut direct = true;
    for i in 0..args.callers {
        let c = LapinCaller::connect(&cli.url, i, queue, wire).await?;
        direct &= c.direct_reply_to();
        callers.push(Arc::new(c));
    }
    let res = measure(cli, args, callers).await;
    stop_tx.send_replace(true);
    let served = server.join().await?;
    let reply_to = if direct { "direct" } else { "exclusive queue" };
    Ok(with_server_figures(res?, reply_to, served))
}

/// Adds what the bench's own servers (lapin and raw) report: how the callers get their replies
/// (`direct`: amq.rabbitmq.reply-to) and how many calls the server answered.
fn with_server_figures(mut report: Report, reply_to: &'static str, served: u64) -> Report {
    report.extra.insert("reply_to", reply_to.into());
    report.extra.insert("served", served.into());
    report
}

/// Drives the callers and measures, then closes the callers; shared by every implementation.
async fn measure(cli: &Cli, args: &RpcArgs, callers: Vec<Arc<dyn RpcCaller>>) -> Result<Report> {
    let res = drive(cli, args, &callers).await;
    for c in &callers {
        c.close().await;
    }
    res
}

/// Runs `--in-flight` calls at a time on each caller until `--count` or `--duration` is done.
async fn drive(cli: &Cli, args: &RpcArgs, callers: &[Arc<dyn RpcCaller>]) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(Latency::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let probe = ResourceProbe::start(cli.broker_pid);
    let progress = spawn_progress("rpc", Arc::clone(&counters), cli.broker_pid, cli.quiet);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in callers {
        // Calls left for this caller (with --count); its in-flight slots take from it.
        let remaining = Arc::new(AtomicU64::new(args.count.unwrap_or(u64::MAX)));
        for _ in 0..args.in_flight {
            let caller = Arc::clone(caller);
            let (counters, latency, stop, remaining) = (
                Arc::clone(&counters),
                Arc::clone(&latency),
                Arc::clone(&stop),
                Arc::clone(&remaining),
            );
            let size = args.size;
            tasks.push(tokio::spawn(async move {
                let mut local = Latency::new();
                let mut seq = 0;
                let res: Result<()> = async {
                    while !stop.load(Ordering::Relaxed)
                        && remaining
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                                r.checked_sub(1)
                            })
                            .is_ok()
                    {
                        let t = now_ns();
                        counters.published.fetch_add(1, Ordering::Relaxed);
                        caller.call(stamp_body(size, seq)).await?;
                        local.record_since(t);
                        counters.delivered(1);
                        seq += 1;
                    }
                    Ok(())
                }
                .await;
                merge_into(&latency, &local);
                res
            }));
        }
    }
    if args.count.is_none() {
        stop_after(&stop, args.duration);
    }
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await? {
            stop.store(true, Ordering::Relaxed);
            first_err.get_or_insert(e);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    progress.abort();
    let resources = probe.finish();
    if let Some(e) = first_err {
        return Err(e);
    }
    let latency = latency.lock().unwrap_or_else(|p| p.into_inner()).summary();
    let tally = Tally {
        sent: Counters::get(&counters.published),
        received: Counters::get(&counters.consumed),
        confirmed: 0,
        in_secs: secs,
        out_secs: secs,
    };
    Ok(Report::new("rpc", "calls", tally, resources).with_latency(latency))
}
