//! `lepus-broker`: runs the bundled AMQP 0-9-1 broker as a server.
//!
//! Once the listener is bound it prints exactly one line to stdout,
//! `lepus-broker listening on ADDR:PORT`, so scripts that start it with `--listen
//! 127.0.0.1:0` can find the port. Logs go to stderr (`RUST_LOG` sets the level, default
//! `info`). SIGINT or SIGTERM stops it gracefully.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use tracing::{error, info, warn};

/// The bundled AMQP 0-9-1 broker of Lepus. Clients connect with
/// `amqp://guest:guest@ADDR:PORT/%2f`.
#[derive(Debug, Parser)]
#[command(name = "lepus-broker", version, about, long_about = None)]
struct Args {
    /// Address and port to accept AMQP connections on; port 0 picks a free port (printed on
    /// stdout once bound).
    #[arg(
        long,
        env = "LEPUS_LISTEN",
        default_value = "127.0.0.1:5672",
        value_name = "ADDR:PORT"
    )]
    listen: String,
    /// Directory for durable data (durable queues and persistent messages).
    #[arg(
        long,
        env = "LEPUS_DATA_DIR",
        default_value = "./lepus-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Users who may log in only from a loopback address (RabbitMQ's `loopback_users`),
    /// comma separated; an empty value allows every user from anywhere.
    #[arg(
        long,
        env = "LEPUS_LOOPBACK_USERS",
        default_value = "guest",
        value_name = "USER,...",
        value_delimiter = ','
    )]
    loopback_users: Vec<String>,
    /// Address of the management HTTP API and Prometheus `/metrics` (what `lepusctl` talks
    /// to); an empty value disables it.
    #[arg(
        long,
        env = "LEPUS_MANAGEMENT_LISTEN",
        default_value = "127.0.0.1:15672",
        value_name = "ADDR:PORT"
    )]
    management_listen: String,
    /// Make the unauthenticated Prometheus `/metrics` per-object: one sample per vhost and
    /// per queue, labelled with their names (RabbitMQ's
    /// `prometheus.return_per_object_metrics`). Without it `/metrics` carries broker-wide
    /// totals only, and per-object samples are at `/metrics/per-object` for users tagged
    /// `monitoring` or `administrator`.
    #[arg(long, env = "LEPUS_PROMETHEUS_PER_OBJECT")]
    prometheus_per_object: bool,
    /// Most open client connections (RabbitMQ's `connection_max`); unlimited when unset.
    #[arg(long, env = "LEPUS_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Most sockets open at once on all listeners, logged in or not; one more is closed at
    /// once. Default: the file-descriptor limit (raised to its hard limit at start) less 100
    /// and a tenth, so that clients can never take the descriptors the store needs.
    #[arg(long, env = "LEPUS_SOCKET_LIMIT", value_name = "N")]
    socket_limit: Option<usize>,
    /// Channel limit proposed in `connection.tune` (RabbitMQ's `channel_max`); a client may
    /// lower it. Opening a channel beyond it closes the connection with 530 NOT_ALLOWED.
    /// 0 means no limit.
    #[arg(
        long,
        env = "LEPUS_CHANNEL_MAX",
        default_value_t = 2047,
        value_name = "N"
    )]
    channel_max: u16,
    /// Largest frame proposed in `connection.tune`, 8 bytes of frame overhead included
    /// (RabbitMQ's `frame_max`; at least 4096). A larger frame closes the connection with 501.
    #[arg(
        long,
        env = "LEPUS_FRAME_MAX",
        default_value_t = 131_072,
        value_name = "BYTES",
        value_parser = clap::value_parser!(u32).range(4096..)
    )]
    frame_max: u32,
    /// Largest message body accepted (RabbitMQ's `max_message_size`, at most 512 MiB as
    /// there). A publish announcing more closes its channel with 406 PRECONDITION_FAILED.
    #[arg(
        long,
        env = "LEPUS_MAX_MESSAGE_SIZE",
        default_value_t = 134_217_728,
        value_name = "BYTES",
        value_parser = clap::value_parser!(u64).range(1..=536_870_912)
    )]
    max_message_size: u64,
    /// Most consumers on one channel (RabbitMQ's `consumer_max_per_channel`); one more
    /// `basic.consume` closes the connection with 530 NOT_ALLOWED. Unlimited when unset.
    #[arg(long, env = "LEPUS_CONSUMER_MAX_PER_CHANNEL", value_name = "N")]
    consumer_max_per_channel: Option<usize>,
    /// Milliseconds a client has from connecting to `connection.open` before the socket is
    /// dropped (RabbitMQ's `handshake_timeout`, also in milliseconds).
    #[arg(
        long,
        env = "LEPUS_HANDSHAKE_TIMEOUT",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    handshake_timeout: u64,
    /// Address for `amqps://` (TLS) connections; needs --tls-cert and --tls-key.
    #[arg(long, env = "LEPUS_TLS_LISTEN", value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<String>,
    /// PEM certificate chain (leaf first) for the TLS listener.
    #[arg(long, env = "LEPUS_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    #[arg(long, env = "LEPUS_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// When a persistent message is confirmed: `always` (after fsync; default), `never`
    /// (after write; survives a broker crash, not a power loss), or an interval such as `200ms`
    /// (after write, fsync at most that long after).
    #[arg(
        long,
        env = "LEPUS_FSYNC",
        default_value = "always",
        value_name = "POLICY"
    )]
    fsync: lepus_broker::store::FsyncPolicy,
    /// Size of a segment file of the message log, such as `64MiB` (the default) or `64KiB`
    /// (clamped to 4 KiB..1 GiB). Fully acked segments are deleted; smaller ones go sooner.
    #[arg(long, env = "LEPUS_SEGMENT_SIZE", default_value = "64MiB", value_name = "BYTES", value_parser = parse_segment_size)]
    segment_size: u32,
    /// Memory budget, such as `256MiB` or `2GiB` (default: 40% of physical memory). Past a
    /// quarter of it, persistent messages of durable queues keep only a small index entry in memory
    /// and their bodies are read back from --data-dir when they near the head of the queue.
    #[arg(long, env = "LEPUS_MEMORY_BUDGET", value_name = "BYTES", value_parser = lepus_broker::parse_bytes)]
    memory_budget: Option<u64>,
    /// Memory high-watermark (default: the memory budget). Above it, publishing connections
    /// are blocked (`connection.blocked`, "low on memory") until memory falls below 95% of
    /// it; consumers keep draining.
    #[arg(long, env = "LEPUS_MEMORY_HIGH_WATERMARK", value_name = "BYTES", value_parser = lepus_broker::parse_bytes)]
    memory_high_watermark: Option<u64>,
    /// Disk free limit, such as `50MB` (the default, as RabbitMQ's `disk_free_limit`) or `1GiB`;
    /// 0 turns it off. While the data directory's file system has less free space, publishing
    /// connections are blocked (`connection.blocked`, "low on disk"); consumers keep draining.
    #[arg(long, env = "LEPUS_DISK_FREE_LIMIT", default_value = "50MB", value_name = "BYTES", value_parser = parse_disk_free_limit)]
    disk_free_limit: u64,
    /// Microseconds the broker keeps polling its sockets after a read before its threads
    /// sleep: lower request/reply latency for up to one CPU core while traffic flows, none
    /// when idle (as the Erlang VM's scheduler busy-wait in RabbitMQ). 0 turns it off.
    #[arg(
        long,
        env = "LEPUS_BUSY_POLL_US",
        default_value_t = 100,
        value_name = "MICROSECONDS"
    )]
    busy_poll_us: u64,
    /// Heartbeat interval proposed to clients in `connection.tune`, in seconds (RabbitMQ's
    /// `heartbeat`); 0 proposes none. A client may lower it.
    #[arg(
        long,
        env = "LEPUS_HEARTBEAT",
        default_value_t = 60,
        value_name = "SECONDS"
    )]
    heartbeat: u64,
    /// A definitions file in RabbitMQ's JSON format (users, vhosts, permissions, exchanges,
    /// queues, bindings; what `lepusctl export_definitions` and RabbitMQ write) imported at
    /// every start, before clients are accepted. It adds and updates, never deletes.
    #[arg(long, env = "LEPUS_DEFINITIONS", value_name = "FILE")]
    definitions: Option<PathBuf>,
    /// The first user, made at the first start (empty data directory) instead of
    /// `guest`/`guest`: tagged `administrator`, every permission on `/`, and allowed to log in
    /// from anywhere. Needs a password (--default-pass or --default-pass-file).
    #[arg(long, env = "LEPUS_DEFAULT_USER", value_name = "NAME")]
    default_user: Option<String>,
    /// The first user's password.
    #[arg(
        long,
        env = "LEPUS_DEFAULT_PASS",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    default_pass: Option<String>,
    /// A file holding the first user's password (its first line), such as a container secret.
    #[arg(
        long,
        env = "LEPUS_DEFAULT_PASS_FILE",
        value_name = "FILE",
        conflicts_with = "default_pass"
    )]
    default_pass_file: Option<PathBuf>,
}

/// The first user from the options: a name needs a password and the other way round.
fn first_user(args: &Args) -> Result<Option<(String, String)>, String> {
    let password = match (&args.default_pass, &args.default_pass_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            Some(text.lines().next().unwrap_or_default().to_owned())
        }
        (None, None) => None,
    };
    match (&args.default_user, password) {
        (Some(user), Some(pass)) if !user.is_empty() && !pass.is_empty() => {
            Ok(Some((user.clone(), pass)))
        }
        (None, None) => Ok(None),
        _ => Err("--default-user and a non-empty password (--default-pass or --default-pass-file) go together".to_owned()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match lepus_broker::raise_fd_limit() {
        Ok(Some((from, to))) => {
            info!(from, to, "file-descriptor limit raised to the hard limit");
        }
        Ok(None) => {}
        Err(err) => warn!(cause = %err, "could not raise the file-descriptor limit"),
    }
    let mut builder = lepus_broker::Broker::builder();
    match first_user(&args) {
        Ok(Some((user, pass))) => builder = builder.first_user(user, pass),
        Ok(None) => {}
        Err(reason) => {
            error!(%reason, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    }
    if let Some(file) = &args.definitions {
        builder = builder.definitions(file);
    }
    if let (Some(addr), Some(cert), Some(key)) = (args.tls_listen, args.tls_cert, args.tls_key) {
        builder = builder.tls(addr, cert, key);
    }
    if let Some(max) = args.max_connections {
        builder = builder.max_connections(max);
    }
    if let Some(max) = args.socket_limit {
        builder = builder.socket_limit(max);
    }
    if let Some(max) = args.consumer_max_per_channel {
        builder = builder.consumer_max_per_channel(max);
    }
    if let Some(budget) = args.memory_budget {
        builder = builder.memory_budget(budget);
    }
    if let Some(watermark) = args.memory_high_watermark {
        builder = builder.memory_high_watermark(watermark);
    }
    builder = builder.disk_free_limit(args.disk_free_limit);
    if !args.management_listen.is_empty() {
        builder = builder.management_listen(args.management_listen);
    }
    let handle = match builder
        .listen(args.listen)
        .data_dir(args.data_dir)
        .loopback_users(args.loopback_users.into_iter().filter(|u| !u.is_empty()))
        .fsync(args.fsync)
        .segment_size(args.segment_size)
        .prometheus_per_object(args.prometheus_per_object)
        .channel_max(args.channel_max)
        .frame_max(args.frame_max)
        .max_message_size(args.max_message_size)
        .handshake_timeout(std::time::Duration::from_millis(args.handshake_timeout))
        .busy_poll(std::time::Duration::from_micros(args.busy_poll_us))
        .heartbeat(std::time::Duration::from_secs(args.heartbeat))
        .start()
        .await
    {
        Ok(handle) => handle,
        Err(err) => {
            error!(cause = %err, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "lepus-broker listening on {}", handle.local_addr());
    let _ = stdout.flush();
    drop(stdout);
    wait_for_signal().await;
    handle.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// Parses `--segment-size` (a byte size of at most 4 GiB; the store clamps it further).
fn parse_segment_size(text: &str) -> Result<u32, String> {
    let bytes = lepus_broker::parse_bytes(text)?;
    u32::try_from(bytes).map_err(|_| format!("segment size {bytes} is over 4 GiB"))
}

/// `--disk-free-limit`: a size, or 0 (off), which `parse_bytes` refuses as a size.
fn parse_disk_free_limit(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    lepus_broker::parse_bytes(text)
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C only on non-Unix).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                error!(cause = %err, "cannot install SIGTERM handler");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
