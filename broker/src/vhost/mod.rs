//! Virtual hosts: the shared topology (exchanges, bindings, queues) of one vhost, routing, and
//! the registry of vhosts (just `/` until access control arrives).
//!
//! Concurrency: [`VHost::topology`] is an `RwLock`; publishing takes only the read lock, long
//! enough to compute the target queues (as `Arc<Queue>`; a large binding set is matched on a
//! snapshot with the lock released, see [`VHost::route`]), then enqueues with no vhost lock
//! held. Declares, binds and deletes take the write lock briefly. Queue state has its own locks
//! (see `queue`); the topology lock is never taken while a queue lock is held.

mod dead_letter;
mod queue_ops;
mod registry;
mod reply_to;
mod routing;

pub(crate) use registry::VHosts;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use amq_protocol::protocol::basic;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use tracing::debug;

use crate::channel::ChannelShared;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::fairness::{self, HEAVY_WORK, LOCKED_WORK};
use crate::memory::Memory;
use crate::message::{Account, Message};
use crate::persistence::{Persistence, TopologyChange};
use crate::queue::{DeadLetter, Queue, QueuePersistence};
use crate::store::{Commit, StoreError};

/// The pseudo-queue of direct reply-to.
pub(crate) const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Exchanges and queues of a vhost.
#[derive(Debug, Default)]
pub(crate) struct Topology {
    /// Exchanges by name, including the default exchange `""`.
    pub(crate) exchanges: HashMap<String, Exchange>,
    /// Queues by name.
    pub(crate) queues: HashMap<String, Arc<Queue>>,
}

/// One virtual host.
#[derive(Debug)]
pub(crate) struct VHost {
    /// Its name (`/`).
    pub(crate) name: String,
    /// Exchanges, bindings and queues; see the module doc.
    topology: RwLock<Topology>,
    /// Direct reply-to: channel token -> channel. Weak, so a closed channel just drops out.
    reply_to: Mutex<HashMap<String, Weak<ChannelShared>>>,
    /// Where persistent messages of durable queues are made durable.
    pub(crate) store: Arc<dyn Persistence>,
    /// The broker's memory accounting (one per broker, shared by all vhosts): its queues
    /// account in it, its connections watch its alarm.
    pub(crate) memory: Arc<Memory>,
    /// The same accounting as every message built here is charged to
    /// (`crate::message::Held`), made once so that a message costs one `Arc` clone.
    pub(crate) account: Arc<dyn Account>,
    /// A weak self-reference, handed to queue housekeeping tasks.
    me: Weak<VHost>,
    /// Message counters for the management API and `/metrics`.
    pub(crate) stats: crate::metrics::VHostStats,
}

impl VHost {
    /// A vhost with the predeclared exchanges.
    pub(crate) fn new(name: &str, store: Arc<dyn Persistence>, memory: Arc<Memory>) -> Arc<Self> {
        let mut topo = Topology::default();
        for (n, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            topo.exchanges.insert(
                n.to_owned(),
                Exchange::new(n, kind, true, false, false, FieldTable::default()),
            );
        }
        Arc::new_cyclic(|me| Self {
            name: name.to_owned(),
            topology: RwLock::new(topo),
            reply_to: Mutex::new(HashMap::new()),
            store,
            account: memory.clone(),
            memory,
            me: me.clone(),
            stats: crate::metrics::VHostStats::default(),
        })
    }

    /// Read access to the topology. Poison-tolerant: the maps stay consistent because every
    /// mutation under the lock is a single insert/remove.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access to the topology (poison-tolerant, as above).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A queue by name.
    pub(crate) fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.read().queues.get(name).cloned()
    }

    /// Inserts a new queue and starts its housekeeping task. A durable, non-exclusive queue
    /// gets the vhost's store.
    pub(crate) fn insert_queue(&self, topo: &mut Topology, mut queue: Queue) -> Arc<Queue> {
        if queue.durable && queue.exclusive_owner.is_none() {
            queue.persistence = Some(QueuePersistence {
                store: self.store.clone(),
                vhost: self.name.clone(),
            });
        }
        queue.memory = self.memory.clone();
        let queue = Arc::new(queue);
        topo.queues.insert(queue.name.clone(), queue.clone());
        self.stats.queue_created();
        // The housekeeping task belongs to the queue: it ends once the queue is deleted, which
        // also happens to every queue when its vhost is dropped (see `Drop for VHost`).
        tokio::spawn(VHost::housekeeping(Arc::downgrade(&queue), self.me.clone()));
        queue
    }

    /// Deletes a queue: removes it and its bindings, cancels its consumers (notifying clients
    /// that asked for `consumer_cancel_notify`). Returns the ready count and the commit that
    /// makes the deletion durable (`None` for a queue the store does not hold; a failing
    /// commit when the store refused it, logged here), or `None` if absent.
    pub(crate) fn delete_queue_now(&self, name: &str) -> Option<(u32, Option<Commit>)> {
        let (queue, commit) = {
            let mut topo = self.write();
            let queue = topo.queues.remove(name)?;
            let dest = Destination::Queue(name.to_owned());
            let deleted = remove_bindings_to(&mut topo, &dest);
            let record = || -> Result<Option<Commit>, StoreError> {
                let mut commit = None;
                if queue.is_persisted() {
                    commit = self.record_topology(TopologyChange::QueueDeleted(name))?;
                }
                if let Some(last) = self.record_deleted_exchanges(&deleted)? {
                    commit = Some(last);
                }
                Ok(commit)
            };
            let commit = record().unwrap_or_else(|err| {
                tracing::error!(vhost = %self.name, queue = name, cause = %err, "cannot persist a queue deletion");
                Some(Commit::failed())
            });
            (queue, commit)
        };
        self.stats.queue_deleted();
        let (count, consumers) = queue.mark_deleted();
        for c in consumers {
            c.channel.cancelled_by_broker(&c.tag);
        }
        debug!(vhost = %self.name, queue = name, "queue deleted");
        Some((count, commit))
    }

    /// Deletes every queue (cancelling its consumers) and every exchange of this vhost, for
    /// the deletion of the vhost itself; returns the commits that make the durable ones'
    /// deletion durable (a failing one where the store refused, logged here). Without this the
    /// store kept them, and a vhost created again under the same name got them back at the
    /// next start.
    pub(crate) fn delete_all(&self) -> Vec<Commit> {
        let mut commits = Vec::new();
        let queues: Vec<String> = self.read().queues.keys().cloned().collect();
        for name in queues {
            if let Some((_, Some(commit))) = self.delete_queue_now(&name) {
                commits.push(commit);
            }
        }
        let mut topo = self.write();
        let deleted: Vec<DeletedExchange> = std::mem::take(&mut topo.exchanges)
            .into_values()
            .map(|x| DeletedExchange {
                name: x.name,
                durable: x.durable,
            })
            .collect();
        match self.record_deleted_exchanges(&deleted) {
            Ok(commit) => commits.extend(commit),
            Err(err) => {
                tracing::error!(vhost = %self.name, cause = %err, "cannot persist the deletion of a vhost's exchanges");
                commits.push(Commit::failed());
            }
        }
        commits
    }

    /// Hands a durable topology change to the store (see `persistence::Persistence::record_topology`)
    /// and returns what its `-ok` waits for. Call with the topology write lock held, so that the
    /// store logs changes in the order they are made.
    pub(crate) fn record_topology(
        &self,
        change: TopologyChange<'_>,
    ) -> Result<Option<Commit>, StoreError> {
        self.store.record_topology(&self.name, change)
    }

    /// Records the deletion of the durable ones among `deleted` (exchanges a deletion or an
    /// unbind removed, see [`delete_exchange`]); returns the last commit (commits resolve in
    /// log order, so it covers the others). Same locking rule as [`Self::record_topology`].
    pub(crate) fn record_deleted_exchanges(
        &self,
        deleted: &[DeletedExchange],
    ) -> Result<Option<Commit>, StoreError> {
        let mut last = None;
        for x in deleted.iter().filter(|x| x.durable) {
            if let Some(commit) = self.record_topology(TopologyChange::ExchangeDeleted(&x.name))? {
                last = Some(commit);
            }
        }
        Ok(last)
    }

    /// Adds `binding` to exchange `source` unless it is there, and records it in the store when
    /// both its ends are durable (also when it was there: the store then answers with a
    /// commit of the topology as it is). Returns what `bind-ok` waits for. Call with the
    /// topology write lock held (`topo`).
    pub(crate) fn add_binding(
        &self,
        topo: &mut Topology,
        source: &str,
        binding: Binding,
    ) -> Result<Option<Commit>, StoreError> {
        let Some(x) = topo.exchanges.get(source) else {
            return Ok(None);
        };
        let commit = if durable_binding(topo, x, &binding.destination) {
            self.record_topology(TopologyChange::Bound(binding.change(source)))?
        } else {
            None
        };
        if let Some(x) = topo.exchanges.get_mut(source) {
            if !x.bindings.contains(&binding) {
                x.bindings.push(binding);
            }
        }
        Ok(commit)
    }

    /// Removes `binding` from exchange `source`, deletes `source` if it is auto-delete and
    /// now unbound, and records both in the store when the binding's ends are durable (also
    /// when it was absent: another connection's unbind of it may still be on its way to disk,
    /// and the store answers with a commit of the topology as it is). Returns what
    /// `unbind-ok` waits for. Call with the topology write lock held (`topo`).
    pub(crate) fn remove_binding(
        &self,
        topo: &mut Topology,
        source: &str,
        binding: &Binding,
    ) -> Result<Option<Commit>, StoreError> {
        let durable = topo
            .exchanges
            .get(source)
            .is_some_and(|x| durable_binding(topo, x, &binding.destination));
        let mut commit = if durable {
            self.record_topology(TopologyChange::Unbound(binding.change(source)))?
        } else {
            None
        };
        let mut now_empty = false;
        if let Some(x) = topo.exchanges.get_mut(source) {
            let before = x.bindings.len();
            x.bindings.retain(|b| b != binding);
            now_empty = x.auto_delete && before > x.bindings.len() && x.bindings.is_empty();
        }
        if now_empty {
            let deleted = delete_exchange(topo, source);
            if let Some(last) = self.record_deleted_exchanges(&deleted)? {
                commit = Some(last);
            }
        }
        Ok(commit)
    }
}

impl Drop for VHost {
    /// Stops the queues' housekeeping tasks (they hold their queue while waiting), so a
    /// stopped broker leaves no task behind.
    fn drop(&mut self) {
        let topo = self.topology.get_mut().unwrap_or_else(|e| e.into_inner());
        for queue in topo.queues.values() {
            queue.mark_deleted();
        }
    }
}

/// An exchange removed from a topology, for the store (which holds only durable ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeletedExchange {
    /// Its name.
    pub(crate) name: String,
    /// Whether it was durable.
    pub(crate) durable: bool,
}

/// Removes every binding that leads to `dest`, and auto-delete exchanges left without any;
/// returns the exchanges deleted.
pub(crate) fn remove_bindings_to(topo: &mut Topology, dest: &Destination) -> Vec<DeletedExchange> {
    let mut emptied = Vec::new();
    for x in topo.exchanges.values_mut() {
        let removed = x.bindings.remove_destination(dest);
        if x.auto_delete && removed > 0 && x.bindings.is_empty() {
            emptied.push(x.name.clone());
        }
    }
    let mut deleted = Vec::new();
    for name in emptied {
        deleted.extend(delete_exchange(topo, &name));
    }
    deleted
}

/// Deletes an exchange and every binding from or to it (cascading auto-delete); returns the
/// exchanges deleted, itself first (none when it does not exist).
pub(crate) fn delete_exchange(topo: &mut Topology, name: &str) -> Vec<DeletedExchange> {
    let Some(x) = topo.exchanges.remove(name) else {
        return Vec::new();
    };
    let mut deleted = vec![DeletedExchange {
        name: x.name,
        durable: x.durable,
    }];
    deleted.extend(remove_bindings_to(
        topo,
        &Destination::Exchange(name.to_owned()),
    ));
    deleted
}

/// Whether a binding from `source` to `destination` is durable: both ends are (the only
/// bindings RabbitMQ keeps across a restart).
pub(crate) fn durable_binding(
    topo: &Topology,
    source: &Exchange,
    destination: &Destination,
) -> bool {
    source.durable
        && match destination {
            Destination::Queue(name) => topo.queues.get(name).is_some_and(|q| q.is_persisted()),
            Destination::Exchange(name) => topo.exchanges.get(name).is_some_and(|x| x.durable),
        }
}
