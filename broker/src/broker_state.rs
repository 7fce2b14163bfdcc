//! The state every connection task shares: the configuration, the vhosts, the access
//! control, the registries of open connections and channels (for the management API) and the
//! busy-poll thread, the disk alarm. Built once by [`crate::BrokerBuilder::start`] (or the fuzzing harness) and
//! handed out as an `Arc<BrokerShared>`; the server, the connections, the management API and
//! [`crate::Admin`] all read it, none of them owns it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::access::AccessControl;
use crate::busy_poll::BusyPoll;
use crate::channel::registry::Channels;
use crate::config::Config;
use crate::connection_registry::Connections;
use crate::disk_alarm::DiskAlarm;
use crate::sockets::SocketBudget;
use crate::vhost::VHosts;

/// What every connection task shares: configuration, vhosts, id counter.
#[derive(Debug)]
pub(crate) struct BrokerShared {
    /// The configuration.
    pub(crate) config: Config,
    /// The vhosts.
    pub(crate) vhosts: VHosts,
    /// Source of connection ids (used for exclusive-queue ownership and logs).
    pub(crate) next_connection_id: AtomicU64,
    /// Users, vhosts and permissions (shared with every connection's permission cache and
    /// with [`crate::Admin`]).
    pub(crate) access: Arc<AccessControl>,
    /// Open connections, for the management API.
    pub(crate) connections: Connections,
    /// Open channels, for the management API (each connection task registers its channels
    /// here; see [`Channels`]).
    pub(crate) channels: Arc<Channels>,
    /// The busy-poll thread every read touches (`None`: busy polling off).
    pub(crate) busy_poll: Option<Arc<BusyPoll>>,
    /// The sockets the broker accepts on, set once they are all bound (`listeners` of the
    /// management API's overview and its port-listener health check).
    pub(crate) listeners: std::sync::OnceLock<Vec<Listener>>,
    /// The sockets the AMQP, TLS and management listeners may hold at once (`--socket-limit`).
    pub(crate) sockets: SocketBudget,
    /// The disk alarm, with a data directory only; its task (started by the server, which
    /// awaits it at shutdown) holds the other `Arc`.
    pub(crate) disk_alarm: Option<Arc<DiskAlarm>>,
}

/// A socket the broker accepts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listener {
    /// RabbitMQ's protocol name: `amqp`, `amqp/ssl` or `http`.
    pub(crate) protocol: &'static str,
    /// The bound address.
    pub(crate) addr: SocketAddr,
}

impl BrokerShared {
    /// The shared state of a broker with `config`, `vhosts` and `access`: no connections or
    /// channels yet, and the busy-poll state the configuration asks for. The one place that
    /// builds it (the broker and the fuzzing harness both come here).
    pub(crate) fn new(config: Config, vhosts: VHosts, access: AccessControl) -> Self {
        let busy_poll = BusyPoll::new(config.busy_poll);
        let sockets = SocketBudget::new(config.socket_limit);
        let disk_alarm = config.data_dir.as_ref().map(|dir| {
            Arc::new(DiskAlarm::new(
                dir.clone(),
                config.disk_free_limit,
                vhosts.memory.alarms().clone(),
            ))
        });
        Self {
            config,
            vhosts,
            next_connection_id: AtomicU64::new(1),
            access: Arc::new(access),
            connections: Connections::default(),
            channels: Arc::default(),
            busy_poll,
            listeners: std::sync::OnceLock::new(),
            sockets,
            disk_alarm,
        }
    }
}
