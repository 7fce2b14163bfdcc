//! Durable topology changes as log records: declaring and deleting exchanges and queues,
//! binding and unbinding (each one record, group-committed), and barriers that resolve once
//! everything appended before them is committed.

use super::*;

/// Refuses names that do not fit a shortstr (AMQP names never do; vhost names come from the
/// admin API).
pub(super) fn check_names(names: &[&str]) -> Result<(), StoreError> {
    if names.iter().all(|name| fits_shortstr(name)) {
        Ok(())
    } else {
        Err(StoreError::NameTooLong)
    }
}

pub(super) fn check_binding(binding: &BindingDef) -> Result<(), StoreError> {
    check_names(&[
        &binding.vhost,
        &binding.source,
        &binding.destination,
        &binding.routing_key,
    ])
}

impl Store {
    /// Records a durable exchange (replacing one of the same vhost and name).
    pub fn declare_exchange(&self, exchange: ExchangeDef) -> Result<Commit, StoreError> {
        check_names(&[&exchange.vhost, &exchange.name, &exchange.kind])?;
        let mut log = self.shared.lock_topology();
        if log.topology.exchange(&exchange.vhost, &exchange.name) == Some(&exchange) {
            return Ok(self.topology_barrier(&log));
        }
        let record = Record::ExchangeDeclare {
            vhost: &exchange.vhost,
            name: &exchange.name,
            kind: &exchange.kind,
            flags: exchange.flags(),
            arguments: &exchange.arguments,
        };
        self.log_topology(&mut log, &record)
    }

    /// Forgets a durable exchange and every binding from or to it (`exchange.delete`).
    /// Idempotent.
    pub fn delete_exchange(&self, vhost: &str, name: &str) -> Result<Commit, StoreError> {
        check_names(&[vhost, name])?;
        let mut log = self.shared.lock_topology();
        if log.topology.exchange(vhost, name).is_none() {
            return Ok(self.topology_barrier(&log));
        }
        self.log_topology(&mut log, &Record::ExchangeDelete { vhost, name })
    }

    /// Records a durable queue and returns its id; a queue of the same vhost and name keeps its
    /// id (a declare with other flags or arguments replaces them).
    pub fn declare_queue(
        &self,
        vhost: &str,
        name: &str,
        auto_delete: bool,
        arguments: Bytes,
    ) -> Result<(QueueId, Commit), StoreError> {
        check_names(&[vhost, name])?;
        let mut log = self.shared.lock_topology();
        let (id, same) = match log.topology.queue(vhost, name) {
            Some(q) => (
                q.id,
                q.auto_delete == auto_delete && q.arguments == arguments,
            ),
            None => (QueueId(log.topology.next_queue_id), false),
        };
        if same {
            return Ok((id, self.topology_barrier(&log)));
        }
        let record = Record::QueueDeclare {
            queue: id,
            vhost,
            name,
            flags: definitions::queue_flags(auto_delete),
            arguments: &arguments,
        };
        let commit = self.log_topology(&mut log, &record)?;
        Ok((id, commit))
    }

    /// Forgets a durable queue, its bindings and its messages (`queue.delete`). Its message
    /// records stay in the log until compaction, but recovery skips them. Idempotent.
    pub fn delete_queue(&self, queue: QueueId) -> Result<Commit, StoreError> {
        let mut log = self.shared.lock_topology();
        if log.topology.queue_by_id(queue).is_none() {
            return Ok(self.topology_barrier(&log));
        }
        self.log_topology(&mut log, &Record::QueueDelete { queue })
    }

    /// Records a binding between durable entities (`queue.bind`, `exchange.bind`). Idempotent.
    pub fn bind(&self, binding: BindingDef) -> Result<Commit, StoreError> {
        check_binding(&binding)?;
        let mut log = self.shared.lock_topology();
        if log.topology.has_binding(&binding) {
            return Ok(self.topology_barrier(&log));
        }
        self.log_topology(&mut log, &Record::Bind(binding_record(&binding)))
    }

    /// Forgets a binding (`queue.unbind`, `exchange.unbind`): the one with the same vhost,
    /// source, destination, routing key and arguments. Idempotent.
    pub fn unbind(&self, binding: &BindingDef) -> Result<Commit, StoreError> {
        check_binding(binding)?;
        let mut log = self.shared.lock_topology();
        if !log.topology.has_binding(binding) {
            return Ok(self.topology_barrier(&log));
        }
        self.log_topology(&mut log, &Record::Unbind(binding_record(binding)))
    }

    /// A commit that resolves once everything appended so far (any record, by anyone) is
    /// committed: what a reply covering several records waits for (`tx.commit-ok` after the
    /// transaction's enqueues and removes, `purge-ok` after the purged messages' removes).
    pub fn barrier(&self) -> Commit {
        let (commit, waiter) = Commit::pending();
        self.shared.commit_upto(None, waiter);
        commit
    }

    /// A commit that resolves once every topology record appended so far is committed.
    pub(super) fn topology_barrier(&self, log: &TopologyLog) -> Commit {
        let (commit, waiter) = Commit::pending();
        self.shared.commit_upto(Some(log.last_record_end), waiter);
        commit
    }

    /// Appends topology `record` and applies it; `log` is the held topology lock, so records
    /// reach the log in the order they are applied. Starts a snapshot when enough records
    /// piled up.
    pub(super) fn log_topology(
        &self,
        log: &mut TopologyLog,
        record: &Record<'_>,
    ) -> Result<Commit, StoreError> {
        let (commit, waiter) = Commit::pending();
        let (end, wake_writer) = {
            let mut state = self.shared.lock();
            if state.low_space && !record.frees_space() {
                return Err(StoreError::NoSpace);
            }
            let position = state.append(record, self.shared.segment_size)?;
            let end = (position.segment, position.offset + position.len);
            state.ledger.topology_record(position.segment, end.1);
            match *record {
                Record::QueueDeclare { queue, .. } => {
                    state.queues.insert(queue);
                }
                Record::QueueDelete { queue } => {
                    state.queues.remove(&queue);
                    state.ledger.forget_queue(queue, end);
                }
                _ => {}
            }
            (end, state.push_waiter(waiter))
        };
        if wake_writer {
            self.shared.wake.notify_one();
        }
        log.topology.apply(record);
        log.uncovered += 1;
        log.last_record_end = end;
        if log.snapshot_due() {
            self.shared.start_snapshot(log);
        }
        Ok(commit)
    }
}
