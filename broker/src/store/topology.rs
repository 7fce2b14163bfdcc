//! `StoredTopology`: the durable topology as the store keeps it while open, indexed so that a
//! change costs the same whatever its size, and changed only by applying topology records (the
//! same code applies a change as it is logged and replays it at recovery). Its `TopologyLog` says
//! how far the log has run ahead of the snapshot.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::ledger::LogPoint;
use super::record::{BindingRecord, Record};
use super::{BindingDef, BindingDestination, Definitions, ExchangeDef, QueueDef, QueueId};

/// Durable exchanges, queues and bindings, by key.
#[derive(Debug, Default)]
pub(crate) struct StoredTopology {
    /// By (vhost, name).
    exchanges: HashMap<(String, String), ExchangeDef>,
    /// By id.
    queues: HashMap<QueueId, QueueDef>,
    /// Queue ids by (vhost, name).
    queue_ids: HashMap<(String, String), QueueId>,
    bindings: HashSet<BindingDef>,
    /// The id the next declared queue gets.
    pub(crate) next_queue_id: u64,
}

impl StoredTopology {
    /// The topology of a snapshot.
    pub(crate) fn from_definitions(defs: Definitions) -> Self {
        let mut topology = Self {
            next_queue_id: defs.next_queue_id.max(1),
            ..Self::default()
        };
        for x in defs.exchanges {
            topology
                .exchanges
                .insert((x.vhost.clone(), x.name.clone()), x);
        }
        for q in defs.queues {
            topology.insert_queue(q);
        }
        topology.bindings.extend(defs.bindings);
        topology
    }

    /// The topology as a snapshot's lists, sorted (so that equal topologies give equal files).
    pub(crate) fn to_definitions(&self) -> Definitions {
        let mut exchanges: Vec<ExchangeDef> = self.exchanges.values().cloned().collect();
        exchanges.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        let mut queues: Vec<QueueDef> = self.queues.values().cloned().collect();
        queues.sort_by_key(|q| q.id);
        let mut bindings: Vec<BindingDef> = self.bindings.iter().cloned().collect();
        bindings.sort_by(|a, b| {
            let key = |b: &BindingDef| {
                (
                    b.vhost.clone(),
                    b.source.clone(),
                    b.destination.clone(),
                    b.routing_key.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        Definitions {
            exchanges,
            queues,
            bindings,
            next_queue_id: self.next_queue_id,
        }
    }

    /// Entities held (the size a snapshot grows with).
    pub(crate) fn len(&self) -> usize {
        self.exchanges.len() + self.queues.len() + self.bindings.len()
    }

    /// The exchange `name` of `vhost`.
    pub(crate) fn exchange(&self, vhost: &str, name: &str) -> Option<&ExchangeDef> {
        self.exchanges.get(&(vhost.to_owned(), name.to_owned()))
    }

    /// The queue `name` of `vhost`.
    pub(crate) fn queue(&self, vhost: &str, name: &str) -> Option<&QueueDef> {
        let id = self.queue_ids.get(&(vhost.to_owned(), name.to_owned()))?;
        self.queues.get(id)
    }

    /// The queue with id `id`.
    pub(crate) fn queue_by_id(&self, id: QueueId) -> Option<&QueueDef> {
        self.queues.get(&id)
    }

    /// Whether an equal binding is held.
    pub(crate) fn has_binding(&self, binding: &BindingDef) -> bool {
        self.bindings.contains(binding)
    }

    /// Ids of every queue held.
    pub(crate) fn queue_ids(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.queues.keys().copied()
    }

    /// Applies a topology record; other records change nothing. Returns the id of a queue the
    /// record deleted (a queue delete, or a declare that replaced a queue of the same name).
    pub(crate) fn apply(&mut self, record: &Record<'_>) -> Option<QueueId> {
        match *record {
            Record::ExchangeDeclare {
                vhost,
                name,
                kind,
                flags,
                arguments,
            } => {
                let def = ExchangeDef::from_flags(
                    vhost.to_owned(),
                    name.to_owned(),
                    kind.to_owned(),
                    flags,
                    Bytes::copy_from_slice(arguments),
                );
                self.exchanges
                    .insert((vhost.to_owned(), name.to_owned()), def);
                None
            }
            Record::ExchangeDelete { vhost, name } => {
                self.exchanges.remove(&(vhost.to_owned(), name.to_owned()));
                self.bindings.retain(|b| {
                    !(b.vhost == vhost
                        && (b.source == name
                            || (b.destination_kind == BindingDestination::Exchange
                                && b.destination == name)))
                });
                None
            }
            Record::QueueDeclare {
                queue,
                vhost,
                name,
                flags,
                arguments,
            } => {
                self.next_queue_id = self.next_queue_id.max(queue.0 + 1);
                let replaced = self
                    .queue_ids
                    .get(&(vhost.to_owned(), name.to_owned()))
                    .copied()
                    .filter(|&old| old != queue);
                if let Some(old) = replaced {
                    self.queues.remove(&old);
                }
                self.insert_queue(QueueDef::from_flags(
                    queue,
                    vhost.to_owned(),
                    name.to_owned(),
                    flags,
                    Bytes::copy_from_slice(arguments),
                ));
                replaced
            }
            Record::QueueDelete { queue } => {
                let removed = self.queues.remove(&queue)?;
                self.queue_ids
                    .remove(&(removed.vhost.clone(), removed.name.clone()));
                self.bindings.retain(|b| {
                    !(b.vhost == removed.vhost
                        && b.destination_kind == BindingDestination::Queue
                        && b.destination == removed.name)
                });
                Some(queue)
            }
            Record::Bind(b) => {
                self.bindings.insert(binding_def(&b));
                None
            }
            Record::Unbind(b) => {
                self.bindings.remove(&binding_def(&b));
                None
            }
            Record::Enqueue { .. } | Record::Remove { .. } | Record::Purge { .. } => None,
        }
    }

    fn insert_queue(&mut self, queue: QueueDef) {
        self.queue_ids
            .insert((queue.vhost.clone(), queue.name.clone()), queue.id);
        self.queues.insert(queue.id, queue);
    }
}

/// The binding a bind or unbind record names.
pub(crate) fn binding_def(b: &BindingRecord<'_>) -> BindingDef {
    BindingDef {
        vhost: b.vhost.to_owned(),
        source: b.source.to_owned(),
        destination_kind: if b.to_exchange {
            BindingDestination::Exchange
        } else {
            BindingDestination::Queue
        },
        destination: b.destination.to_owned(),
        routing_key: b.routing_key.to_owned(),
        arguments: Bytes::copy_from_slice(b.arguments),
    }
}

/// The record of `binding` (bind or unbind as `bind` says).
pub(crate) fn binding_record(binding: &BindingDef) -> BindingRecord<'_> {
    BindingRecord {
        vhost: &binding.vhost,
        source: &binding.source,
        to_exchange: binding.destination_kind == BindingDestination::Exchange,
        destination: &binding.destination,
        routing_key: &binding.routing_key,
        arguments: &binding.arguments,
    }
}

/// The topology and how far the log has run ahead of its snapshot; behind the store's
/// topology lock, which is taken before the append lock (never the other way round), so that
/// topology records are appended in the order the changes are applied.
#[derive(Debug)]
pub(crate) struct TopologyLog {
    pub(crate) topology: StoredTopology,
    /// Topology records appended (or replayed at open) that no durable snapshot covers yet.
    pub(crate) uncovered: u64,
    /// End of the last topology record appended or replayed: a reply about the topology as it
    /// is (an idempotent declare, bind or delete) waits for the log to be committed up to
    /// here.
    pub(crate) last_record_end: LogPoint,
    /// Set while a snapshot is being written (one at a time).
    pub(crate) snapshot_running: bool,
}

impl TopologyLog {
    /// Whether enough records piled up to fold them into a snapshot: more than half the
    /// topology's size (so a snapshot, which costs the topology's size, costs O(1) per change
    /// amortized, and a replay at open at most 1.5 times a snapshot's load) and more than 1,024.
    pub(crate) fn snapshot_due(&self) -> bool {
        !self.snapshot_running && self.uncovered > (self.topology.len() as u64 / 2).max(1024)
    }
}
