//! The registry of open client connections, for the management API (`/api/connections`,
//! `lepusctl list_connections` and `close_connection`).
//!
//! Concurrency: one `Mutex<HashMap>` touched twice per connection (after `connection.open`
//! and when the task ends) and by management requests; never on the message path. Each entry
//! holds a clone of the connection's event sender; dropping the entry does not affect the
//! connection (the connection task holds its own sender and the receiver).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::mpsc;

/// Events other tasks send to a connection task.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// A store finished (or failed) making publish `seq` of `channel` durable.
    Confirm {
        /// The channel.
        channel: u16,
        /// The channel's shared state when it published: a channel closed and reopened under
        /// the same number must not receive the old channel's confirms.
        generation: std::sync::Weak<crate::channel::ChannelShared>,
        /// The publish sequence number.
        seq: u64,
        /// True for `basic.ack`, false for `basic.nack`.
        ok: bool,
    },
    /// An operator closes the connection (`lepusctl close_connection`): 320.
    Close {
        /// The reason given to the client.
        reason: String,
    },
}

/// What the management API shows about one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    /// Broker-unique connection id.
    pub(crate) id: u64,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The broker's address the client connected to.
    pub(crate) local: Option<SocketAddr>,
    /// The authenticated user.
    pub(crate) user: String,
    /// The vhost it opened.
    pub(crate) vhost: String,
    /// When `connection.open` completed.
    pub(crate) connected_at: SystemTime,
}

impl ConnectionInfo {
    /// RabbitMQ's connection name: `CLIENT:PORT -> SERVER:PORT`.
    pub(crate) fn name(&self) -> String {
        match self.local {
            Some(local) => format!("{} -> {}", self.peer, local),
            None => self.peer.to_string(),
        }
    }
}

/// Open connections by id.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    map: Mutex<HashMap<u64, (ConnectionInfo, mpsc::UnboundedSender<ConnEvent>)>>,
    /// Connections registered so far (`rabbitmq_connections_opened_total`).
    opened: AtomicU64,
    /// Registered connections that ended (`rabbitmq_connections_closed_total`).
    closed: AtomicU64,
}

impl Connections {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (ConnectionInfo, mpsc::UnboundedSender<ConnEvent>)>>
    {
        // Poison-tolerant: each mutation is one insert or remove.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an opened connection.
    pub(crate) fn register(&self, info: ConnectionInfo, events: mpsc::UnboundedSender<ConnEvent>) {
        self.lock().insert(info.id, (info, events));
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// (opened, closed) connections since the broker started.
    pub(crate) fn churn(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }

    /// Forgets a finished connection.
    pub(crate) fn remove(&self, id: u64) {
        if self.lock().remove(&id).is_some() {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every open connection, by id.
    pub(crate) fn list(&self) -> Vec<ConnectionInfo> {
        let mut all: Vec<ConnectionInfo> = self.lock().values().map(|(i, _)| i.clone()).collect();
        all.sort_by_key(|i| i.id);
        all
    }

    /// How many connections are open.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// Asks every connection in `vhost` to close with 320 CONNECTION_FORCED and `reason` (a
    /// deleted vhost's, as RabbitMQ does); returns how many were asked.
    pub(crate) fn close_in_vhost(&self, vhost: &str, reason: &str) -> usize {
        self.lock()
            .values()
            .filter(|(i, _)| i.vhost == vhost)
            .filter(|(_, events)| {
                events
                    .send(ConnEvent::Close {
                        reason: reason.to_owned(),
                    })
                    .is_ok()
            })
            .count()
    }

    /// Asks the connection named `name` (or with that id) to close with 320
    /// CONNECTION_FORCED and `reason`; false when there is no such connection.
    pub(crate) fn close(&self, name: &str, reason: &str) -> bool {
        let map = self.lock();
        let hit = map
            .values()
            .find(|(i, _)| i.name() == name || i.id.to_string() == name);
        match hit {
            Some((_, events)) => events
                .send(ConnEvent::Close {
                    reason: reason.to_owned(),
                })
                .is_ok(),
            None => false,
        }
    }
}
