//! Command line: global options and one subcommand per scenario (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Load generator for AMQP 0-9-1 brokers (RabbitMQ, the bundled Lepus broker), in the manner of
/// RabbitMQ PerfTest and lavinmqperf. Prints live progress on stderr and a final table (or
/// `--json`) on stdout.
#[derive(Debug, Parser)]
#[command(name = "lepus-bench", version)]
pub(crate) struct Cli {
    /// Broker URL; only loopback hosts are accepted.
    #[arg(
        long,
        global = true,
        env = "LEPUS_BENCH_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub(crate) url: String,
    /// PID of the broker process, to report its CPU seconds and peak RSS (RabbitMQ: beam.smp).
    #[arg(long, global = true)]
    pub(crate) broker_pid: Option<u32>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No live progress on stderr.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// The scenario to run.
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// Producers publish to queues through the default exchange, consumers drain them.
    Throughput(ThroughputArgs),
    /// One producer publishes to a fanout exchange bound to N queues, one consumer per queue.
    Fanout(FanoutArgs),
    /// Fill one queue with a backlog, then drain it and check the order.
    Backlog(BacklogArgs),
    /// Request/reply calls: callers with calls in flight against an echo server.
    Rpc(RpcArgs),
    /// Background tasks end to end through `#[lepus::task]`: confirmed enqueue -> run -> ack.
    Tasks(TasksArgs),
}

/// Which AMQP client publishes and consumes in `throughput`, `fanout` and `backlog`.
#[derive(Debug, Clone, Copy, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientImpl {
    /// The bench's own minimal client (batched writes, in-place parsing): cheap enough that a
    /// fast broker, not the load generator, sets the rate.
    Raw,
    /// lapin, as applications use it (about 5 µs of client CPU per message).
    Lapin,
}

/// How messages are published and consumed (shared by `throughput` and `fanout`).
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct FlowArgs {
    /// Body size in bytes (the first 16 carry a timestamp and a sequence number).
    #[arg(long, default_value_t = 16)]
    pub(crate) size: usize,
    /// Consumer prefetch (`basic.qos`), for manual ack.
    #[arg(long, default_value_t = 100)]
    pub(crate) prefetch: u16,
    /// Consume with `no_ack` (the broker forgets a message once sent).
    #[arg(long)]
    pub(crate) autoack: bool,
    /// Manual ack: ack with `multiple = true` every N deliveries (1 = ack each one).
    #[arg(long, default_value_t = 1)]
    pub(crate) multi_ack: u64,
    /// Publisher confirms with at most WINDOW unconfirmed publishes per producer (0 = off).
    #[arg(long, default_value_t = 0)]
    pub(crate) confirm: usize,
    /// `delivery_mode = 2` and durable queues.
    #[arg(long)]
    pub(crate) persistent: bool,
    /// Seconds to publish for (ignored when --count is given).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Messages per producer (instead of --duration).
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Producers pause while more than this many messages are queued and unconsumed (0 = never),
    /// so a fast publisher measures the broker's sustained rate, not its memory.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_backlog: u64,
    /// Publishes handed to lapin before waiting for them to be written (`--client lapin`).
    #[arg(long, default_value_t = 256)]
    pub(crate) pipeline: usize,
    /// The AMQP client used by producers and consumers.
    #[arg(long, value_enum, default_value_t = ClientImpl::Raw)]
    pub(crate) client: ClientImpl,
}

/// `throughput` options.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct ThroughputArgs {
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    pub(crate) producers: usize,
    /// Consumer connections.
    #[arg(long, default_value_t = 1)]
    pub(crate) consumers: usize,
    /// Queues; producer i publishes to queue i % queues, consumer j consumes queue j % queues.
    #[arg(long, default_value_t = 1)]
    pub(crate) queues: usize,
    #[command(flatten)]
    #[serde(flatten)]
    /// Publish and consume options.
    pub(crate) flow: FlowArgs,
}

/// `fanout` options.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct FanoutArgs {
    /// Queues bound to the fanout exchange (one consumer each).
    #[arg(long, default_value_t = 10)]
    pub(crate) queues: usize,
    #[command(flatten)]
    #[serde(flatten)]
    /// Publish and consume options.
    pub(crate) flow: FlowArgs,
}

/// `backlog` options.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct BacklogArgs {
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub(crate) size: usize,
    /// Total body bytes to queue (e.g. 2147483648 for 2 GiB); --count wins if both are given.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub(crate) bytes: u64,
    /// Messages to queue.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Transient messages and a non-durable queue (default: persistent, durable).
    #[arg(long)]
    pub(crate) transient: bool,
    /// Publisher confirm window (0 = no confirms).
    #[arg(long, default_value_t = 256)]
    pub(crate) confirm: usize,
    /// Prefetch of the draining consumer.
    #[arg(long, default_value_t = 1000)]
    pub(crate) prefetch: u16,
    /// Ack with `multiple = true` every N deliveries while draining.
    #[arg(long, default_value_t = 100)]
    pub(crate) multi_ack: u64,
    /// Give up after this many seconds in total.
    #[arg(long, default_value_t = 3600)]
    pub(crate) timeout: u64,
    /// The AMQP client used by the producer and the consumer.
    #[arg(long, value_enum, default_value_t = ClientImpl::Raw)]
    pub(crate) client: ClientImpl,
}

/// Which RPC client/server pair `rpc` drives.
#[derive(Debug, Clone, Copy, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RpcImpl {
    /// A hand-written lapin client (direct reply-to, correlation map) and server (publish + ack).
    Lapin,
    /// The `lapin` pair sending what the Lepus stub and worker send: requests with
    /// content-type, a 32-character correlation id, expiration, delivery-mode, type, the
    /// `x-lepus-deadline` and `x-lepus-caller` headers; the server skips requests past their deadline
    /// and replies with content-type. Separates the cost of those properties (in lapin, the
    /// broker and the socket) from the framework's own.
    #[value(name = "lapin-wire")]
    #[serde(rename = "lapin-wire")]
    LapinWire,
    /// The Lepus `#[lepus::rpc]` stub and worker pool.
    Lepus,
    /// The same echo as a `#[lepus::service]` trait: its generated client and server (the
    /// same queue, method name and wire as `lepus`), to compare the two idioms (issue 16).
    #[value(name = "lepus-service")]
    #[serde(rename = "lepus-service")]
    LepusService,
    /// The same pair as `lapin` on the bench's own client: measures the broker's round trip
    /// without a client library's thread hops.
    Raw,
}

/// `rpc` options.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct RpcArgs {
    /// Caller connections.
    #[arg(long, default_value_t = 1)]
    pub(crate) callers: usize,
    /// Calls in flight per caller.
    #[arg(long, default_value_t = 1)]
    pub(crate) in_flight: usize,
    /// Request and reply body size in bytes.
    #[arg(long, default_value_t = 16)]
    pub(crate) size: usize,
    /// Client/server implementation.
    #[arg(long = "impl", value_enum, default_value_t = RpcImpl::Lapin)]
    pub(crate) implementation: RpcImpl,
    /// Seconds to call for (ignored when --count is given).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Calls per caller (instead of --duration).
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Server prefetch (0 = callers × in-flight, capped at 65535).
    #[arg(long, default_value_t = 0)]
    pub(crate) prefetch: u16,
}

/// `tasks` options (defaults match `bench/celery/run`: 20,000 tasks, 2 producers).
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct TasksArgs {
    /// Tasks to enqueue and run.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) tasks: u64,
    /// Producer connections, each with its own client, sharing the tasks.
    #[arg(long, default_value_t = 2)]
    pub(crate) producers: usize,
    /// Enqueues in flight (awaiting their confirm) per producer.
    #[arg(long, default_value_t = 256)]
    pub(crate) window: usize,
    /// Worker prefetch.
    #[arg(long, default_value_t = 256)]
    pub(crate) prefetch: u16,
    /// Tasks the worker runs at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Seconds to wait for every task to run before giving up.
    #[arg(long, default_value_t = 600.0)]
    pub(crate) timeout: f64,
    /// Submit each task with its result kept (`submit`) and wait for every result
    /// (`handle.result`), as Celery's `delay(..).get()` does: tasks with results per second.
    #[arg(long)]
    pub(crate) results: bool,
    /// Instead: one chord of this many `noop` members and a callback summing their outputs;
    /// reports the wall time from submit to the chord's result (issue 21).
    #[arg(long)]
    pub(crate) chord: Option<u64>,
}
