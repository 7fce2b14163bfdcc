//! The broker's configuration: every tuning knob and limit [`crate::BrokerBuilder`] sets (and
//! the `lepus-broker` binary's flags map to), with RabbitMQ's defaults, and the TLS listener's
//! options. Read-only once the broker starts: it lives in [`crate::broker_state::BrokerShared`].

use std::path::PathBuf;
use std::time::Duration;

use crate::access::AccessOptions;
use crate::store::FsyncPolicy;

/// Tuning and limits a broker runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Heartbeat proposed in `connection.tune` (zero disables).
    pub(crate) heartbeat: Duration,
    /// Time from accept to `connection.open` before the socket is dropped.
    pub(crate) handshake_timeout: Duration,
    /// Largest frame proposed in `connection.tune`, overhead included.
    pub(crate) frame_max: u32,
    /// Highest channel number proposed in `connection.tune`.
    pub(crate) channel_max: u16,
    /// Directory for durable data; `None` keeps everything in memory.
    pub(crate) data_dir: Option<PathBuf>,
    /// Loopback-only users and what counts as loopback.
    pub(crate) access: AccessOptions,
    /// Where the management HTTP API listens (`None`: not served).
    pub(crate) management_listen: Option<String>,
    /// `/metrics` carries per-vhost and per-queue samples (names included) instead of
    /// totals (RabbitMQ's `prometheus.return_per_object_metrics`; off by default).
    pub(crate) prometheus_per_object: bool,
    /// Most open client connections (`None`: unlimited, RabbitMQ's default).
    pub(crate) max_connections: Option<usize>,
    /// Most sockets the listeners hold at once, logged in or not (`None`: derived from the
    /// descriptor limit, see `sockets`).
    pub(crate) socket_limit: Option<usize>,
    /// The TLS listener, if any.
    pub(crate) tls: Option<TlsOptions>,
    /// When a persistent message counts as stored (`--fsync`).
    pub(crate) fsync: FsyncPolicy,
    /// Size at which the store starts a new segment file (`--segment-size`).
    pub(crate) segment_size: u32,
    /// Largest message body accepted (RabbitMQ's `max_message_size`, default 128 MiB); a
    /// content header announcing more closes the channel with 406.
    pub(crate) max_message_size: u64,
    /// Most consumers one channel may hold (RabbitMQ's `consumer_max_per_channel`; `None`:
    /// unlimited, the default); one more closes the connection with 530.
    pub(crate) consumer_max_per_channel: Option<usize>,
    /// The memory budget in bytes (`--memory-budget`); `None`: 40 % of physical memory.
    pub(crate) memory_budget: Option<u64>,
    /// The memory high-watermark in bytes (`--memory-high-watermark`); `None`: the budget.
    pub(crate) memory_high_watermark: Option<u64>,
    /// The disk alarm's limit in bytes (`--disk-free-limit`): publishers are blocked while the
    /// data directory's file system has less free space; 0 turns the alarm off. See
    /// `disk_alarm`.
    pub(crate) disk_free_limit: u64,
    /// How long the broker keeps polling sockets after a read before its workers sleep
    /// (`--busy-poll-us`; zero, the embedded default, turns it off). See `busy_poll`.
    pub(crate) busy_poll: Duration,
    /// A definitions file (RabbitMQ's JSON format) imported at every start, after the data
    /// directory is recovered and before clients are accepted (`--definitions`).
    pub(crate) definitions: Option<PathBuf>,
}

/// RabbitMQ's default `max_message_size`: 128 MiB.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            frame_max: 131_072,
            channel_max: 2047,
            data_dir: None,
            access: AccessOptions::default(),
            management_listen: None,
            prometheus_per_object: false,
            max_connections: None,
            socket_limit: None,
            tls: None,
            fsync: FsyncPolicy::Always,
            segment_size: crate::store::DEFAULT_SEGMENT_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            consumer_max_per_channel: None,
            memory_budget: None,
            memory_high_watermark: None,
            disk_free_limit: crate::disk_alarm::DEFAULT_DISK_FREE_LIMIT,
            busy_poll: Duration::ZERO,
            definitions: None,
        }
    }
}

/// Where and with what certificate to serve TLS.
#[derive(Debug, Clone)]
pub(crate) struct TlsOptions {
    /// Listen address (`127.0.0.1:0` picks a port).
    pub(crate) listen: String,
    /// PEM certificate chain, leaf first.
    pub(crate) cert: PathBuf,
    /// PEM private key of the leaf.
    pub(crate) key: PathBuf,
}
