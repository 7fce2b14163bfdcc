//! Virtual hosts: the shared topology (exchanges, bindings, queues) of one vhost, routing, and
//! the registry of vhosts (just `/` until access control arrives).
//!
//! Concurrency: [`VHost::topology`] is an `RwLock`; publishing takes only the read lock, long
//! enough to compute the target queues (as `Arc<Queue>`; a large binding set is matched on a
//! snapshot with the lock released, see [`VHost::route`]), then enqueues with no vhost lock
//! held. Declares, binds and deletes take the write lock briefly. Queue state has its own locks
//! (see `queue`); the topology lock is never taken while a queue lock is held.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use tracing::debug;

use crate::channel::ChannelShared;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::fairness::{self, HEAVY_WORK, LOCKED_WORK};
use crate::memory::Memory;
use crate::message::Message;
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
        tokio::spawn(Queue::housekeeping(Arc::downgrade(&queue), self.me.clone()));
        queue
    }

    /// The queues a message published to `exchange` with `routing_key` reaches, following
    /// exchange-to-exchange bindings and alternate exchanges (an exchange that does not exist
    /// routes nowhere), each queue once, and the work it took.
    ///
    /// Locking (see `fairness`): small binding sets are matched under the topology read lock,
    /// released and retaken every [`LOCKED_WORK`]; a larger set is matched on a snapshot of
    /// its bindings after the lock is released, and its queues are looked up in batches under
    /// short holds. A route whose work passes [`HEAVY_WORK`] finishes in [`fairness::heavy`].
    pub(crate) fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Routed {
        let mut walk = RouteWalk {
            first: Some(exchange),
            pending: Vec::new(),
            visited: HashSet::new(),
            routed: Routed {
                queues: Vec::new(),
                work: 1,
            },
            unsorted: false,
        };
        if exchange.is_empty() {
            if let Some(q) = self.read().queues.get(routing_key) {
                walk.routed.queues.push(q.clone());
            }
            return walk.routed;
        }
        if !self.walk(&mut walk, routing_key, headers, false) {
            fairness::heavy(|| self.walk(&mut walk, routing_key, headers, true));
        }
        if walk.unsorted {
            // Many queues: duplicates were not checked on the way; drop them now.
            walk.routed
                .queues
                .sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
            walk.routed.queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        walk.routed
    }

    /// Routes through the exchanges of `walk` until none is left (true), or, unless `in_heavy`,
    /// until the work passes [`HEAVY_WORK`] (false: the caller continues in `heavy`).
    fn walk<'k>(
        &self,
        walk: &mut RouteWalk<'k>,
        routing_key: &str,
        headers: Option<&FieldTable>,
        in_heavy: bool,
    ) -> bool {
        let mut topo = self.read();
        let mut since_lock = 0;
        loop {
            if !in_heavy && walk.routed.work > HEAVY_WORK {
                return false;
            }
            if since_lock > LOCKED_WORK {
                // Let writers (declares, binds) in between exchanges.
                drop(topo);
                topo = self.read();
                since_lock = 0;
            }
            let name: std::borrow::Cow<'k, str> = match walk.first.take() {
                Some(first) => first.into(),
                None => match walk.pending.pop() {
                    Some(next) => next.into(),
                    None => return true,
                },
            };
            let Some(x) = topo.exchanges.get(name.as_ref()) else {
                continue;
            };
            let before = walk.routed.queues.len();
            let mut routed_any = false;
            let alternate = x.alternate.as_deref();
            if x.bindings.route_cost(routing_key) <= LOCKED_WORK {
                let work = x
                    .bindings
                    .route(routing_key, headers, usize::MAX, |d| {
                        routed_any |= walk.reach(d, &topo.queues, name.as_ref());
                    })
                    .unwrap_or(0);
                walk.routed.work += work;
                since_lock += work;
                if !routed_any && walk.routed.queues.len() == before {
                    if let Some(ae) = alternate {
                        walk.push_exchange(ae, name.as_ref());
                    }
                }
                continue;
            }
            // A large set: match a snapshot with the lock released.
            let bindings = x.bindings.clone();
            let alternate = alternate.map(str::to_owned);
            drop(topo);
            let mut dests = Vec::new();
            let limit = if in_heavy { usize::MAX } else { HEAVY_WORK };
            let work = match bindings.route(routing_key, headers, limit, |d| dests.push(d)) {
                Some(work) => work,
                None => {
                    // Too much for this task step: put the exchange back and continue the
                    // whole walk in `heavy`.
                    walk.first = None;
                    walk.pending.push(name.into_owned());
                    return false;
                }
            };
            walk.routed.work += work + dests.len();
            for chunk in dests.chunks(LOCKED_WORK / 4) {
                let topo = self.read();
                for d in chunk {
                    routed_any |= walk.reach(d, &topo.queues, name.as_ref());
                }
            }
            if !routed_any && walk.routed.queues.len() == before {
                if let Some(ae) = &alternate {
                    walk.push_exchange(ae, name.as_ref());
                }
            }
            topo = self.read();
            since_lock = 0;
        }
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
            c.channel.consumers().remove(c.tag.as_str());
            if c.channel.cancel_notify {
                c.channel
                    .send(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                        consumer_tag: c.tag.clone(),
                        nowait: true,
                    })));
            }
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
            self.record_topology(TopologyChange::Bound(source, &binding))?
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
            self.record_topology(TopologyChange::Unbound(source, binding))?
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

    /// Registers a direct reply-to channel; returns its token.
    pub(crate) fn register_reply_to(&self, channel: &Arc<ChannelShared>) -> String {
        let token = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            (channel.connection_id << 16) | u64::from(channel.id)
        );
        let mut map = self.reply_to.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(token.clone(), Arc::downgrade(channel));
        token
    }

    /// The channel waiting for replies under `token`.
    pub(crate) fn reply_to_channel(&self, token: &str) -> Option<Arc<ChannelShared>> {
        let map = self.reply_to.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token)?.upgrade()
    }

    /// Forgets a reply-to token (cancel or channel close).
    pub(crate) fn unregister_reply_to(&self, token: &str) {
        let mut map = self.reply_to.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(token);
    }

    /// Republishes dead letters of `queue` to its dead-letter exchange, with `x-death`.
    ///
    /// A persistent letter leaves `queue`'s store only after its copies are stored in the
    /// queues it is routed to (its `DeadLetter::stored` entry is forgotten last): a crash in
    /// between leaves it in both (a duplicate, as at-least-once allows), never in neither.
    pub(crate) fn dead_letter(&self, queue: &Arc<Queue>, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        let Some(dlx) = queue.config.dead_letter_exchange.clone() else {
            for letter in letters {
                letter.leave(queue);
            }
            return;
        };
        for letter in letters {
            let routing_key = queue
                .config
                .dead_letter_routing_key
                .clone()
                .unwrap_or_else(|| letter.message.routing_key.as_str().to_owned());
            let message = Arc::new(with_death(
                &letter.message,
                &queue.name,
                letter.reason,
                &dlx,
                &routing_key,
            ));
            if !self.read().exchanges.contains_key(&dlx) {
                letter.leave(queue);
                continue;
            }
            let targets = self
                .route(&dlx, &routing_key, message.properties.headers().as_ref())
                .queues;
            for target in targets {
                // A message going round a cycle without a rejection in it is dropped, as
                // RabbitMQ does.
                if is_cycle(&message, &target.name) {
                    continue;
                }
                let outcome = target.enqueue(self, message.clone());
                if let (crate::queue::EnqueueOutcome::Enqueued { seq }, true) =
                    (outcome, target.is_persisted() && message.is_persistent())
                {
                    // No publisher waits for a dead letter's durability; its removal from
                    // `queue`, appended after this, commits after it.
                    let _ = self.store.enqueue(&self.name, &target.name, seq, &message);
                    target.page_out(seq);
                }
            }
            letter.leave(queue);
        }
    }
}

/// What routing a message found.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    /// The queues it goes to, each once.
    pub(crate) queues: Vec<Arc<Queue>>,
    /// The work routing took (see `fairness`), for the publisher's task budget.
    pub(crate) work: usize,
}

/// A route in progress (see [`VHost::route`]).
struct RouteWalk<'k> {
    /// The exchange published to, until it is routed through.
    first: Option<&'k str>,
    /// Exchanges reached through exchange-to-exchange bindings or alternates, to route next.
    pending: Vec<String>,
    /// Every exchange queued for routing so far except the first (with it, a cycle ends).
    visited: HashSet<String>,
    /// The result so far.
    routed: Routed,
    /// Past a few queues, duplicates are removed at the end rather than checked per queue.
    unsorted: bool,
}

/// Queues routed to before duplicates are dropped by sorting rather than by a scan per queue.
const DEDUP_SCAN: usize = 16;

impl RouteWalk<'_> {
    /// Follows a matched destination from exchange `from`: a queue that exists joins the
    /// result, an exchange joins the walk. True when it led somewhere.
    fn reach(
        &mut self,
        destination: &Destination,
        queues: &HashMap<String, Arc<Queue>>,
        from: &str,
    ) -> bool {
        match destination {
            Destination::Queue(name) => {
                let Some(q) = queues.get(name) else {
                    return false;
                };
                let queues = &mut self.routed.queues;
                if self.unsorted {
                    queues.push(q.clone());
                } else if !queues.iter().any(|have| Arc::ptr_eq(have, q)) {
                    queues.push(q.clone());
                    self.unsorted = queues.len() > DEDUP_SCAN;
                }
                true
            }
            Destination::Exchange(name) => {
                self.push_exchange(name, from);
                true
            }
        }
    }

    /// Queues exchange `name` (reached from `from`) for routing unless it was already.
    fn push_exchange(&mut self, name: &str, from: &str) {
        if self.visited.is_empty() {
            self.visited.insert(from.to_owned());
        }
        if self.visited.insert(name.to_owned()) {
            self.pending.push(name.to_owned());
        }
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

/// RabbitMQ's dead-letter cycle test: the message's `x-death` entries, newest first, up to
/// and including the first one for `target`, contain no rejection. (No entry for `target`: no
/// cycle.)
fn is_cycle(message: &Message, target: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = message
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    let field = |d: &AMQPValue, key: &str| -> Option<Vec<u8>> {
        match d {
            AMQPValue::FieldTable(t) => match t.inner().get(key) {
                Some(AMQPValue::LongString(v)) => Some(v.as_bytes().to_vec()),
                _ => None,
            },
            _ => None,
        }
    };
    for death in deaths.as_slice() {
        if field(death, "reason").as_deref() == Some(b"rejected") {
            return false;
        }
        if field(death, "queue").as_deref() == Some(target.as_bytes()) {
            return true;
        }
    }
    false
}

/// The dead-lettered copy of `message`: `x-death` updated as RabbitMQ does (one entry per
/// queue and reason, with a count, newest first), `x-first-death-*` set once, `expiration`
/// removed. The body is shared, not copied.
fn with_death(
    message: &Message,
    queue: &str,
    reason: &str,
    dlx: &str,
    routing_key: &str,
) -> Message {
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let is_entry = |t: &FieldTable| {
        matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.as_bytes() == queue.as_bytes())
            && matches!(t.inner().get("reason"), Some(AMQPValue::LongString(r)) if r.as_bytes() == reason.as_bytes())
    };
    let existing = deaths
        .iter()
        .position(|d| matches!(d, AMQPValue::FieldTable(t) if is_entry(t)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut entry = match existing.map(|i| deaths.remove(i)) {
        Some(AMQPValue::FieldTable(t)) => t,
        _ => FieldTable::default(),
    };
    let count = entry
        .inner()
        .get("count")
        .and_then(crate::queue::as_i64)
        .unwrap_or(0)
        + 1;
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("reason".into(), AMQPValue::LongString(reason.into()));
    entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
    entry.insert("time".into(), AMQPValue::Timestamp(now));
    entry.insert(
        "exchange".into(),
        AMQPValue::LongString(message.exchange.as_str().into()),
    );
    let mut keys = FieldArray::default();
    keys.push(AMQPValue::LongString(message.routing_key.as_str().into()));
    entry.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
    if let Some(exp) = message.properties.expiration() {
        entry.insert(
            "original-expiration".into(),
            AMQPValue::LongString(exp.as_str().into()),
        );
    }
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    if !headers.contains_key("x-first-death-reason") {
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString(queue.into()),
        );
        headers.insert(
            "x-first-death-exchange".into(),
            AMQPValue::LongString(message.exchange.as_str().into()),
        );
    }
    let p = &message.properties;
    let mut properties = basic::AMQPProperties::default().with_headers(headers);
    macro_rules! copy {
        ($get:ident, $with:ident) => {
            if let Some(v) = p.$get().clone() {
                properties = properties.$with(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    Message {
        exchange: ShortString::try_new(dlx).unwrap_or_default(),
        routing_key: ShortString::try_new(routing_key).unwrap_or_default(),
        properties,
        body: message.body.clone(),
    }
}

/// The vhosts a broker serves.
#[derive(Debug)]
pub(crate) struct VHosts {
    /// Vhosts by name. Read by every `connection.open`; written only by the admin API
    /// (`add_vhost`/`delete_vhost`), briefly.
    map: RwLock<HashMap<String, Arc<VHost>>>,
    /// The store new vhosts are created with (the management API reads its counters).
    pub(crate) store: Arc<dyn Persistence>,
    /// The broker's memory accounting, shared by every vhost's queues.
    pub(crate) memory: Arc<Memory>,
}

impl VHosts {
    /// The registry with the default vhost `/`.
    pub(crate) fn new(store: Arc<dyn Persistence>, memory: Arc<Memory>) -> Self {
        let mut map = HashMap::new();
        map.insert(
            "/".to_owned(),
            VHost::new("/", store.clone(), memory.clone()),
        );
        Self {
            map: RwLock::new(map),
            store,
            memory,
        }
    }

    /// The vhost named `name`, if it exists.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<VHost>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Creates vhost `name` (with the predeclared exchanges) unless it exists.
    pub(crate) fn add(&self, name: &str) -> Arc<VHost> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| VHost::new(name, self.store.clone(), self.memory.clone()))
            .clone()
    }

    /// Removes vhost `name`; connections already in it keep their `Arc` until they close.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<VHost>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }
}
