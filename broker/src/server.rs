//! The embeddable broker: [`Broker::builder`] configures it, [`BrokerBuilder::start`] binds the
//! listener and spawns the accept loop, and [`BrokerHandle`] (`broker_handle.rs`) stops it.
//!
//! Task ownership: the accept task owns a `JoinSet` of connection tasks; the handle owns the
//! accept task's `JoinHandle` and the shutdown sender. `shutdown()` signals every task, the
//! accept loop stops accepting and waits for its connections, each of which sends
//! `connection.close` 320 CONNECTION_FORCED and waits briefly for `close-ok`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::access::{AccessControl, LoopbackPolicy};
use crate::broker_handle::BrokerHandle;
use crate::broker_state::{BrokerShared, Listener};
use crate::config::{Config, TlsOptions};
use crate::connection;
use crate::durable_store;
use crate::error::Error;
use crate::memory::Memory;
use crate::persistence::{MemoryStore, Persistence};
use crate::shutdown::{accept_connections, Shutdown};
use crate::store::{FsyncPolicy, StoreConfig};
use crate::vhost::VHosts;

/// Whether persistent bodies can be paged out (only with a data directory).
fn data_dir_set(config: &Config) -> bool {
    config.data_dir.is_some()
}

/// Entry point: `Broker::builder().listen("127.0.0.1:0").start().await?`.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with the defaults (`127.0.0.1:5672`, heartbeat 60 s, frame_max 131072,
    /// channel_max 2047, handshake timeout 10 s).
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            listen: "127.0.0.1:5672".to_owned(),
            config: Config::default(),
            store: None,
        }
    }
}

/// Configures a broker before it starts.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    listen: String,
    config: Config,
    /// The persistence seam; `None` means the in-memory store.
    store: Option<Arc<dyn Persistence>>,
}

impl BrokerBuilder {
    /// The address to accept AMQP connections on (`127.0.0.1:0` picks a free port).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// The heartbeat interval proposed to clients (`Duration::ZERO` proposes none).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.config.heartbeat = interval;
        self
    }

    /// How long a client may take from connecting to `connection.open`.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// The largest frame proposed to clients, including the 8 bytes of frame overhead
    /// (at least 4096, the spec's minimum).
    pub fn frame_max(mut self, frame_max: u32) -> Self {
        self.config.frame_max = frame_max.max(4096);
        self
    }

    /// The channel_max proposed in `connection.tune` (default 2047, as RabbitMQ; 0 means no
    /// limit). A client may lower it; opening a channel once that many are open closes the
    /// connection with 530 NOT_ALLOWED, as RabbitMQ does.
    pub fn channel_max(mut self, channel_max: u16) -> Self {
        self.config.channel_max = channel_max;
        self
    }

    /// The largest message body accepted (default 128 MiB, RabbitMQ's `max_message_size`).
    /// A content header announcing a larger body closes that channel with 406
    /// PRECONDITION_FAILED; the connection and its other channels carry on.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// At most `max` consumers per channel (RabbitMQ's `consumer_max_per_channel`; unlimited
    /// by default). One more `basic.consume` closes the connection with 530 NOT_ALLOWED,
    /// "reached maximum (N) of consumers per channel", as RabbitMQ does.
    pub fn consumer_max_per_channel(mut self, max: usize) -> Self {
        self.config.consumer_max_per_channel = Some(max);
        self
    }

    /// The directory for durable data: durable exchanges, queues and bindings, and persistent
    /// messages of durable queues, restored at the next start. Without it the broker keeps
    /// everything in memory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    /// Users who may log in only from a loopback address (RabbitMQ's `loopback_users`;
    /// default `["guest"]`, empty to allow them from anywhere).
    pub fn loopback_users<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.access.loopback_users = users.into_iter().map(Into::into).collect();
        self
    }

    /// Counts exactly these peer addresses as loopback for [`Self::loopback_users`], instead
    /// of RabbitMQ's rule (all of 127.0.0.0/8 and ::1). Lets a test on one host treat a
    /// client bound to 127.0.0.2 as remote.
    pub fn loopback_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.config.access.loopback = LoopbackPolicy::Only(addrs.into_iter().collect());
        self
    }

    /// At most `max` open client connections; one more gets `connection.close` 530
    /// NOT_ALLOWED at `connection.open` (RabbitMQ's `connection_max`).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = Some(max);
        self
    }

    /// At most `max` sockets open at once across the AMQP, TLS and management listeners,
    /// before or after login (at least 1). A socket accepted over it is closed at once. The
    /// default keeps file descriptors for the store: the soft `RLIMIT_NOFILE` less 100 and a
    /// tenth of it (at most half), as RabbitMQ keeps its sockets below its file handles.
    pub fn socket_limit(mut self, max: usize) -> Self {
        self.config.socket_limit = Some(max.max(1));
        self
    }

    /// Also accepts `amqps://` connections on `addr`, with the PEM certificate chain `cert`
    /// (leaf first) and PEM private key `key`.
    pub fn tls(
        mut self,
        addr: impl Into<String>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.config.tls = Some(TlsOptions {
            listen: addr.into(),
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Serves the management HTTP API and `/metrics` on `addr` (`127.0.0.1:0` picks a free
    /// port; see [`BrokerHandle::management_addr`]). Off unless set; the `lepus-broker`
    /// binary sets `127.0.0.1:15672` by default.
    pub fn management_listen(mut self, addr: impl Into<String>) -> Self {
        self.config.management_listen = Some(addr.into());
        self
    }

    /// Makes the unauthenticated `/metrics` per-object: one sample per vhost and per queue,
    /// labelled with their names (RabbitMQ's `prometheus.return_per_object_metrics`). Off by
    /// default: `/metrics` then carries broker-wide totals only, and the per-object samples
    /// are at `/metrics/per-object`, for `monitoring` and `administrator` users.
    pub fn prometheus_per_object(mut self, on: bool) -> Self {
        self.config.prometheus_per_object = on;
        self
    }

    /// When a persistent message counts as stored, i.e. when its publisher confirm goes out:
    /// after `fdatasync` ([`FsyncPolicy::Always`], the default), or after `write` only.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.config.fsync = policy;
        self
    }

    /// Size at which the store closes a segment file of the log and starts the next (default
    /// 64 MiB; clamped to 4 KiB..1 GiB). Smaller segments are deleted sooner once acked; tests
    /// use small ones to create and delete many.
    pub fn segment_size(mut self, bytes: u32) -> Self {
        self.config.segment_size = bytes;
        self
    }

    /// The memory budget in bytes (default: 40 % of physical memory, 1 GiB if unknown). Once
    /// queued messages account for a quarter of it, persistent messages of durable queues keep only
    /// a small index entry in memory and their bodies are read back from the data directory
    /// when they near the head of their queue (without a data directory nothing is paged).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.config.memory_budget = Some(bytes.max(1));
        self
    }

    /// The memory high-watermark in bytes (default: the memory budget). Above it, publishing
    /// connections are blocked (`connection.blocked`, reason "low on memory") until the
    /// accounted memory falls below 95 % of it; consumers keep draining.
    pub fn memory_high_watermark(mut self, bytes: u64) -> Self {
        self.config.memory_high_watermark = Some(bytes.max(1));
        self
    }

    /// Keeps polling the sockets for `window` after each read before the runtime's workers
    /// go to sleep, which takes the thread wake-ups off a request/reply round trip (about
    /// half of it on an idle machine; see the README's performance section) for up to one CPU
    /// core while traffic flows, and nothing when idle. Off by default for an embedded broker,
    /// which runs on its host's runtime; the `lepus-broker` binary sets 100 µs
    /// (`--busy-poll-us`). RabbitMQ's schedulers busy-wait the same way (`+sbwt`).
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.config.busy_poll = window;
        self
    }

    /// The first user, tagged `administrator` with every permission on vhost `/`, made at
    /// the first start (when the data directory has no users yet) instead of `guest`/`guest`
    /// (RabbitMQ's `default_user`/`default_pass`). Unlike `guest` it may log in from
    /// anywhere. Later starts keep the stored users whatever this says.
    pub fn first_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.access.default_user = Some((name.into(), password.into()));
        self
    }

    /// Imports `path`, a definitions file in RabbitMQ's JSON format (users, vhosts,
    /// permissions, exchanges, queues, bindings), at every start, once the data directory is
    /// recovered and before clients are accepted (RabbitMQ's `load_definitions`). The import
    /// adds and updates, never deletes; a file that does not import stops the start.
    pub fn definitions(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.definitions = Some(path.into());
        self
    }

    /// Uses `store` for persistent messages of durable queues when there is no data directory
    /// (crate-private: unit tests use it to check that confirms wait for the store).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn store(mut self, store: Arc<dyn Persistence>) -> Self {
        self.store = Some(store);
        self
    }

    /// The disk alarm's limit (`--disk-free-limit`), with a data directory: while its file
    /// system has fewer free bytes, publishing connections are blocked (`connection.blocked`,
    /// reason "low on disk") and consumers keep draining. Default 50 MB, as RabbitMQ's
    /// `disk_free_limit`; 0 turns the alarm off. Checked every second.
    pub fn disk_free_limit(mut self, bytes: u64) -> Self {
        self.config.disk_free_limit = bytes;
        self
    }

    /// Binds the listener and starts serving in the background.
    pub async fn start(self) -> Result<BrokerHandle, Error> {
        let listener = TcpListener::bind(&self.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: self.listen.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let access =
            AccessControl::load(self.config.data_dir.as_deref(), self.config.access.clone())
                .map_err(|source| Error::AccessDefinitions {
                    path: self
                        .config
                        .data_dir
                        .as_deref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    source,
                })?;
        // With a data directory, recover before accepting anyone: the store refuses to open on
        // damaged files, and the broker with it.
        let (store, durable): (Arc<dyn Persistence>, _) = match &self.config.data_dir {
            Some(dir) => {
                let mut store_config = StoreConfig::new(dir);
                store_config.fsync = self.config.fsync;
                store_config.segment_size = self.config.segment_size;
                let (durable, recovered) = durable_store::open(store_config).await?;
                (durable.clone(), Some((durable, recovered)))
            }
            // A store given to the builder (tests), else the in-memory one.
            None => (
                self.store.clone().unwrap_or_else(|| Arc::new(MemoryStore)),
                None,
            ),
        };
        let budget = self
            .config
            .memory_budget
            .unwrap_or_else(Memory::default_budget);
        let watermark = self.config.memory_high_watermark.unwrap_or(budget);
        let memory = Arc::new(Memory::new(budget, watermark));
        info!(
            budget,
            watermark,
            paging = data_dir_set(&self.config),
            "memory budget"
        );
        let vhosts = VHosts::new(store, memory);
        for name in access.vhosts() {
            vhosts.add(&name);
        }
        let durable = match durable {
            Some((durable, recovered)) => {
                durable_store::restore(&vhosts, &durable, recovered)?;
                Some(durable)
            }
            None => None,
        };
        let shared = Arc::new(BrokerShared::new(self.config, vhosts, access));
        if let Some(path) = &shared.config.definitions {
            crate::management::import_definitions_file(&shared, path)
                .await
                .map_err(|reason| Error::Definitions {
                    path: path.display().to_string(),
                    reason,
                })?;
        }
        let (stop_tx, shutdown) = Shutdown::new();
        let disk_alarm = shared
            .disk_alarm
            .clone()
            .map(|alarm| alarm.start(shutdown.clone()));
        let management = match &shared.config.management_listen {
            Some(addr) => Some(
                crate::management::start(addr, shared.clone(), shutdown.clone())
                    .await
                    .map_err(|source| Error::Bind {
                        addr: addr.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let (management_addr, management) = match management {
            Some((addr, task)) => (Some(addr), Some(task)),
            None => (None, None),
        };
        let (tls_addr, tls) = match &shared.config.tls {
            Some(options) => {
                let (addr, task) = crate::tls::start(options, shared.clone(), shutdown.clone())
                    .await
                    .map_err(|source| Error::Bind {
                        addr: options.listen.clone(),
                        source,
                    })?;
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        let mut listeners = vec![Listener {
            protocol: "amqp",
            addr: local_addr,
        }];
        listeners.extend(tls_addr.map(|addr| Listener {
            protocol: "amqp/ssl",
            addr,
        }));
        listeners.extend(management_addr.map(|addr| Listener {
            protocol: "http",
            addr,
        }));
        // Set once, here, before anyone can ask.
        let _ = shared.listeners.set(listeners);
        if let Some(poller) = &shared.busy_poll {
            // Only latency depends on it: without the thread the broker works as with a zero
            // window.
            if let Err(err) = poller.start(shutdown.clone()) {
                warn!(cause = %err, "could not start the busy-poll thread; busy polling is off");
            }
        }
        let accept = {
            let (shared, stop) = (shared.clone(), shutdown.clone());
            tokio::spawn(accept_connections(
                listener,
                shutdown,
                "amqp",
                shared.sockets.clone(),
                move |stream, peer, local| {
                    let (read, write) = stream.into_split();
                    connection::serve(
                        Box::new(read),
                        crate::outbox::WriteSide::Tcp(write),
                        peer,
                        local,
                        shared.clone(),
                        stop.clone(),
                    )
                },
            ))
        };
        info!(%local_addr, socket_limit = shared.sockets.limit(), "broker listening");
        Ok(BrokerHandle {
            shared,
            management_addr,
            management,
            tls_addr,
            tls,
            local_addr,
            stop_tx,
            accept,
            disk_alarm,
            durable,
        })
    }
}
