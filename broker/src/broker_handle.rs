//! [`BrokerHandle`]: a running broker, as [`BrokerBuilder::start`](crate::BrokerBuilder::start)
//! returns it: its addresses, its administration, and its shutdown (which signals every task
//! and waits for the accept loop, the TLS and management listeners, the disk alarm and the
//! store).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::admin::Admin;
use crate::broker_state::BrokerShared;
#[cfg(test)]
use crate::memory::Memory;
use crate::store::DurableQueues;

/// A running broker. Dropping it stops the accept loop's signal sender, which stops the broker
/// too (without waiting); call [`BrokerHandle::shutdown`] to stop and wait.
#[derive(Debug)]
pub struct BrokerHandle {
    /// The broker's shared state, for [`BrokerHandle::admin`].
    pub(crate) shared: Arc<BrokerShared>,
    /// Where the management API listens, if it does.
    pub(crate) management_addr: Option<SocketAddr>,
    /// The management API's server task; it stops on the same shutdown signal.
    pub(crate) management: Option<JoinHandle<()>>,
    /// Where the TLS listener is bound, if there is one.
    pub(crate) tls_addr: Option<SocketAddr>,
    /// The TLS accept task (owns its connection tasks); stops on the shutdown signal.
    pub(crate) tls: Option<JoinHandle<()>>,
    pub(crate) local_addr: SocketAddr,
    /// The shutdown signal; every broker task holds a receiver.
    pub(crate) stop_tx: watch::Sender<bool>,
    /// The accept loop, which owns all connection tasks.
    pub(crate) accept: JoinHandle<()>,
    /// The disk alarm's task (with a data directory); stops on the shutdown signal.
    pub(crate) disk_alarm: Option<JoinHandle<()>>,
    /// The store, when there is a data directory; closed (flushed) by `shutdown`. Dropping the
    /// last reference lets its writer thread flush and exit in the background.
    pub(crate) durable: Option<Arc<DurableQueues>>,
}

impl BrokerHandle {
    /// The shared state (unit tests inspect channels and queues through it).
    #[cfg(test)]
    pub(crate) fn shared_for_tests(&self) -> &Arc<BrokerShared> {
        &self.shared
    }

    /// The broker's memory accounting (for tests of paging and the memory alarm).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> Arc<Memory> {
        self.shared.vhosts.memory.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's bound address (`None` unless [`BrokerBuilder::tls`](crate::BrokerBuilder::tls) was set).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The management API's bound address (`None` unless
    /// [`BrokerBuilder::management_listen`](crate::BrokerBuilder::management_listen) was set).
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// Administration of users, vhosts and permissions (what `lepusctl` does over HTTP).
    pub fn admin(&self) -> Admin {
        Admin::new(self.shared.clone())
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
        if let Some(task) = self.tls {
            if let Err(err) = task.await {
                error!(cause = %err, "TLS listener failed");
            }
        }
        if let Some(task) = self.management {
            if let Err(err) = task.await {
                error!(cause = %err, "management API failed");
            }
        }
        if let Some(task) = self.disk_alarm {
            if let Err(err) = task.await {
                error!(cause = %err, "disk alarm task failed");
            }
        }
        if let Some(durable) = self.durable {
            if let Err(err) = durable.store().close().await {
                error!(cause = %err, "closing the store failed");
            }
        }
        info!(local_addr = %self.local_addr, "broker stopped");
    }
}
