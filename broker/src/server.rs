//! The embeddable broker: [`Broker::builder`] configures it, [`BrokerBuilder::start`] binds the
//! listener and spawns the accept loop, and [`BrokerHandle`] stops it.
//!
//! Task ownership: the accept task owns a `JoinSet` of connection tasks; the handle owns the
//! accept task's `JoinHandle` and the shutdown sender. `shutdown()` signals every task, the
//! accept loop stops accepting and waits for its connections, each of which sends
//! `connection.close` 320 CONNECTION_FORCED and waits briefly for `close-ok`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info};

use crate::connection;
use crate::error::Error;
use crate::persistence::{MemoryStore, Store};
use crate::shutdown::Shutdown;
use crate::store::{seam, DurableQueues, FsyncPolicy, StoreConfig};
use crate::vhost::VHosts;

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
    /// When a persistent message counts as stored (`--fsync`).
    pub(crate) fsync: FsyncPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            frame_max: 131_072,
            channel_max: 2047,
            data_dir: None,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// What every connection task shares: configuration, vhosts, id counter.
#[derive(Debug)]
pub(crate) struct BrokerShared {
    /// The configuration.
    pub(crate) config: Config,
    /// The vhosts.
    pub(crate) vhosts: VHosts,
    /// Source of connection ids (used for exclusive-queue ownership and logs).
    pub(crate) next_connection_id: AtomicU64,
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
    store: Option<Arc<dyn Store>>,
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

    /// The highest channel number proposed to clients.
    pub fn channel_max(mut self, channel_max: u16) -> Self {
        self.config.channel_max = channel_max;
        self
    }

    /// The directory for durable data: durable exchanges, queues and bindings, and persistent
    /// messages of durable queues, restored at the next start. Without it the broker keeps
    /// everything in memory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    /// When a persistent message counts as stored, i.e. when its publisher confirm goes out:
    /// after `fdatasync` ([`FsyncPolicy::Always`], the default), or after `write` only.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.config.fsync = policy;
        self
    }

    /// Uses `store` for persistent messages of durable queues when there is no data directory
    /// (crate-private: unit tests use it to check that confirms wait for the store).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
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
        // With a data directory, recover before accepting anyone: the store refuses to open on
        // damaged files, and the broker with it.
        let (store, durable): (Arc<dyn Store>, _) = match &self.config.data_dir {
            Some(dir) => {
                let mut store_config = StoreConfig::new(dir);
                store_config.fsync = self.config.fsync;
                let (durable, recovered) = seam::open(store_config).await?;
                (durable.clone(), Some((durable, recovered)))
            }
            // A store given to the builder (tests), else the in-memory one.
            None => (
                self.store.clone().unwrap_or_else(|| Arc::new(MemoryStore)),
                None,
            ),
        };
        let vhosts = VHosts::new(store);
        let durable = match durable {
            Some((durable, recovered)) => {
                seam::restore(&vhosts, &durable, recovered)?;
                Some(durable)
            }
            None => None,
        };
        let shared = Arc::new(BrokerShared {
            config: self.config,
            vhosts,
            next_connection_id: AtomicU64::new(1),
        });
        let (stop_tx, shutdown) = Shutdown::new();
        let accept = tokio::spawn(accept_loop(listener, shared, shutdown));
        info!(%local_addr, "broker listening");
        Ok(BrokerHandle {
            local_addr,
            stop_tx,
            accept,
            durable,
        })
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<BrokerShared>, mut shutdown: Shutdown) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "accepted");
                    connections.spawn(connection::serve(stream, peer, shared.clone(), shutdown.clone()));
                }
                Err(err) => {
                    error!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // Every connection got the signal too; give them time to close politely.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// A running broker. Dropping it stops the accept loop's signal sender, which stops the broker
/// too (without waiting); call [`BrokerHandle::shutdown`] to stop and wait.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    /// The shutdown signal; every broker task holds a receiver.
    stop_tx: watch::Sender<bool>,
    /// The accept loop, which owns all connection tasks.
    accept: JoinHandle<()>,
    /// The store, when there is a data directory; closed (flushed) by `shutdown`. Dropping the
    /// last reference lets its writer thread flush and exit in the background.
    durable: Option<Arc<DurableQueues>>,
}

impl BrokerHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `amqp://guest:guest@ADDR/%2f`, ready for any AMQP client.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.local_addr)
    }

    /// Stops accepting, closes every connection with 320 CONNECTION_FORCED and waits for the
    /// broker's tasks.
    pub async fn shutdown(self) {
        let _ = self.stop_tx.send(true);
        if let Err(err) = self.accept.await {
            error!(cause = %err, "accept loop failed");
        }
        if let Some(durable) = self.durable {
            if let Err(err) = durable.store().close().await {
                error!(cause = %err, "closing the store failed");
            }
        }
        info!(local_addr = %self.local_addr, "broker stopped");
    }
}
