//! The bindings of one exchange and their routing index: a lookup by routing key (direct), a
//! trie (topic, see `topic`), or the list itself (fanout; headers, with each binding's
//! `x-match` parsed once).
//!
//! Costs: adding a binding and checking for a duplicate are O(1) (an identity index by
//! destination and routing key); removing all bindings to a destination is proportional to
//! their number; [`Bindings::retain`] visits every binding. Routing is O(1) plus the matches
//! for direct, O(key words × trie nodes) at worst for topic (usually the nodes on the key's
//! path), O(bindings) for fanout and O(bindings + their argument entries) for headers;
//! [`Bindings::route_cost`] says which before routing, so the vhost can route a large set
//! without its topology lock held (see `VHost::route`).
//!
//! Storage: bindings sit in slots in creation order (listing order for the management API and
//! the store); a removed binding leaves an empty slot, and once half the slots are empty the
//! set compacts (renumbers and rebuilds its indexes), so removals cost O(1) amortized and the
//! dead weight stays below the live. The set is behind an `Arc`: routing a large set takes a
//! cheap snapshot under the lock and matches after releasing it; a change while such a route
//! runs copies the set first (`Arc::make_mut`), so neither waits for the other.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use amq_protocol::types::FieldTable;

use super::topic::{IdHasher, TopicTrie};
use super::{headers_match_rule, Binding, Destination, ExchangeKind, HeadersRule};

/// Compaction starts once a set has this many slots and at most half are live.
const COMPACT_MIN_SLOTS: usize = 64;

/// The bindings of one exchange; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct Bindings {
    /// Shared with routes in progress (snapshots); copied on write while one is.
    set: Arc<BindingSet>,
}

/// Lists of slots keyed by a hash of their identity (the hash is `RandomState`'s, so clients
/// cannot aim collisions at one list).
type SlotIndex = HashMap<u64, Vec<u32>, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone)]
struct BindingSet {
    kind: ExchangeKind,
    /// In creation order; `None` once removed (until compaction).
    slots: Vec<Option<Slot>>,
    /// Live slots.
    live: usize,
    /// Hashes identities for the two indexes below.
    hasher: RandomState,
    /// hash(destination, routing key) -> slots (one per distinct arguments table).
    by_identity: SlotIndex,
    /// hash(destination) -> slots.
    by_destination: SlotIndex,
    /// Direct exchanges: routing key -> slots.
    direct: HashMap<String, Vec<u32>>,
    /// Topic exchanges: the patterns.
    topic: TopicTrie,
    /// Field-table entries in all binding arguments (the headers exchange's matching cost).
    argument_entries: usize,
}

#[derive(Debug, Clone)]
struct Slot {
    binding: Binding,
    /// The headers exchange's reading of the arguments' `x-match`.
    rule: HeadersRule,
}

impl Bindings {
    /// No bindings, for an exchange of `kind`.
    pub(crate) fn new(kind: ExchangeKind) -> Self {
        Self {
            set: Arc::new(BindingSet {
                kind,
                slots: Vec::new(),
                live: 0,
                hasher: RandomState::new(),
                by_identity: SlotIndex::default(),
                by_destination: SlotIndex::default(),
                direct: HashMap::new(),
                topic: TopicTrie::default(),
                argument_entries: 0,
            }),
        }
    }

    /// How many bindings there are.
    pub(crate) fn len(&self) -> usize {
        self.set.live
    }

    /// True without bindings.
    pub(crate) fn is_empty(&self) -> bool {
        self.set.live == 0
    }

    /// The bindings in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.set.slots.iter().flatten().map(|s| &s.binding)
    }

    /// True when an identical binding (destination, routing key and arguments) exists.
    pub(crate) fn contains(&self, binding: &Binding) -> bool {
        self.set.find(binding).is_some()
    }

    /// Adds `binding` unless an identical one exists.
    pub(crate) fn push(&mut self, binding: Binding) {
        if self.contains(&binding) {
            return;
        }
        Arc::make_mut(&mut self.set).insert(binding);
    }

    /// Keeps only the bindings for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Binding) -> bool) {
        let doomed: Vec<u32> = self
            .set
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(s) if !keep(&s.binding) => Some(i as u32),
                _ => None,
            })
            .collect();
        if doomed.is_empty() {
            return;
        }
        let set = Arc::make_mut(&mut self.set);
        for slot in doomed {
            set.remove_slot(slot);
        }
        set.maybe_compact();
    }

    /// Removes every binding to `destination`; returns how many there were.
    pub(crate) fn remove_destination(&mut self, destination: &Destination) -> usize {
        let key = self.set.destination_hash(destination);
        let Some(slots) = self.set.by_destination.get(&key) else {
            return 0;
        };
        let doomed: Vec<u32> = slots
            .iter()
            .copied()
            .filter(|&s| {
                self.set
                    .binding(s)
                    .is_some_and(|b| &b.destination == destination)
            })
            .collect();
        if doomed.is_empty() {
            return 0;
        }
        let set = Arc::make_mut(&mut self.set);
        for &slot in &doomed {
            set.remove_slot(slot);
        }
        set.maybe_compact();
        doomed.len()
    }

    /// An upper bound on the work [`Bindings::route`] does for `routing_key` (1 unit: one
    /// binding, argument entry or trie state visited).
    pub(crate) fn route_cost(&self, routing_key: &str) -> usize {
        let set = &self.set;
        match set.kind {
            ExchangeKind::Direct => 1 + set.direct.get(routing_key).map_or(0, Vec::len),
            ExchangeKind::Fanout => 1 + set.live,
            ExchangeKind::Topic => {
                let words = routing_key.bytes().filter(|b| *b == b'.').count() + 2;
                words.saturating_mul(set.topic.node_count()) + set.live
            }
            ExchangeKind::Headers => 1 + set.live + set.argument_entries,
        }
    }

    /// Calls `each` with the destination of every binding that matches. Returns the work done
    /// (as [`Bindings::route_cost`] counts it), or `None` without calling `each` when the work
    /// would pass `limit` (known up front except for topic, whose automaton gives up there).
    pub(crate) fn route<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        limit: usize,
        mut each: impl FnMut(&'a Destination),
    ) -> Option<usize> {
        let set = &*self.set;
        if set.kind != ExchangeKind::Topic && self.route_cost(routing_key) > limit {
            return None;
        }
        let work = match set.kind {
            ExchangeKind::Direct => {
                let slots = set.direct.get(routing_key).map_or(&[][..], Vec::as_slice);
                for &s in slots {
                    if let Some(b) = set.binding(s) {
                        each(&b.destination);
                    }
                }
                1 + slots.len()
            }
            ExchangeKind::Fanout => {
                for s in set.slots.iter().flatten() {
                    each(&s.binding.destination);
                }
                1 + set.live
            }
            ExchangeKind::Topic => set.topic.route(routing_key, limit, |slot| {
                if let Some(b) = set.binding(slot) {
                    each(&b.destination);
                }
            })?,
            ExchangeKind::Headers => {
                for s in set.slots.iter().flatten() {
                    if headers_match_rule(&s.binding.arguments, s.rule, headers) {
                        each(&s.binding.destination);
                    }
                }
                1 + set.live + set.argument_entries
            }
        };
        Some(work)
    }
}

impl<'a> IntoIterator for &'a Bindings {
    type Item = &'a Binding;
    type IntoIter = Box<dyn Iterator<Item = &'a Binding> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl BindingSet {
    fn binding(&self, slot: u32) -> Option<&Binding> {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|s| &s.binding)
    }

    fn identity_hash(&self, destination: &Destination, routing_key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        destination.hash(&mut h);
        routing_key.hash(&mut h);
        h.finish()
    }

    fn destination_hash(&self, destination: &Destination) -> u64 {
        self.hasher.hash_one(destination)
    }

    fn find(&self, binding: &Binding) -> Option<u32> {
        let key = self.identity_hash(&binding.destination, &binding.routing_key);
        self.by_identity
            .get(&key)?
            .iter()
            .copied()
            .find(|&s| self.binding(s) == Some(binding))
    }

    fn insert(&mut self, binding: Binding) {
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.index(slot, &binding);
        let rule = HeadersRule::of(&binding.arguments);
        self.slots.push(Some(Slot { binding, rule }));
        self.live += 1;
    }

    /// Adds `slot` holding `binding` to every index.
    fn index(&mut self, slot: u32, binding: &Binding) {
        let identity = self.identity_hash(&binding.destination, &binding.routing_key);
        let destination = self.destination_hash(&binding.destination);
        self.by_identity.entry(identity).or_default().push(slot);
        self.by_destination
            .entry(destination)
            .or_default()
            .push(slot);
        self.argument_entries += binding.arguments.inner().len();
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(binding.routing_key.clone())
                .or_default()
                .push(slot),
            ExchangeKind::Topic => self.topic.insert(&binding.routing_key, slot),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        let Some(Slot { binding, .. }) = self.slots.get_mut(slot as usize).and_then(Option::take)
        else {
            return;
        };
        self.live -= 1;
        let identity = self.identity_hash(&binding.destination, &binding.routing_key);
        let destination = self.destination_hash(&binding.destination);
        for (index, key) in [
            (&mut self.by_identity, identity),
            (&mut self.by_destination, destination),
        ] {
            if let Some(list) = index.get_mut(&key) {
                list.retain(|s| *s != slot);
                if list.is_empty() {
                    index.remove(&key);
                }
            }
        }
        self.argument_entries -= binding.arguments.inner().len();
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(list) = self.direct.get_mut(&binding.routing_key) {
                    list.retain(|s| *s != slot);
                    if list.is_empty() {
                        self.direct.remove(&binding.routing_key);
                    }
                }
            }
            ExchangeKind::Topic => self.topic.remove(&binding.routing_key, slot),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    /// Renumbers the live slots and rebuilds the indexes once at most half the slots are live.
    fn maybe_compact(&mut self) {
        if self.slots.len() < COMPACT_MIN_SLOTS || self.live * 2 > self.slots.len() {
            return;
        }
        let slots: Vec<Slot> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect();
        self.by_identity.clear();
        self.by_destination.clear();
        self.direct.clear();
        self.topic = TopicTrie::default();
        self.argument_entries = 0;
        for (i, slot) in slots.iter().enumerate() {
            self.index(i as u32, &slot.binding);
        }
        self.slots = slots.into_iter().map(Some).collect();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use amq_protocol::types::AMQPValue;

    use super::*;

    fn binding(queue: &str, key: &str) -> Binding {
        Binding {
            destination: Destination::Queue(queue.into()),
            routing_key: key.into(),
            arguments: FieldTable::default(),
        }
    }

    fn routed(b: &Bindings, key: &str, headers: Option<&FieldTable>) -> Vec<String> {
        let mut out = Vec::new();
        b.route(key, headers, usize::MAX, |d| out.push(d)).unwrap();
        let mut names: Vec<String> = out
            .iter()
            .map(|d| match d {
                Destination::Queue(q) | Destination::Exchange(q) => q.clone(),
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_kind_routes_and_forgets_removed_bindings() {
        let mut direct = Bindings::new(ExchangeKind::Direct);
        direct.push(binding("q1", "k"));
        direct.push(binding("q2", "k"));
        direct.push(binding("q2", "k"));
        direct.push(binding("q3", "other"));
        assert_eq!(direct.len(), 3);
        assert_eq!(routed(&direct, "k", None), ["q1", "q2"]);
        direct.retain(|b| b.destination != Destination::Queue("q1".into()));
        assert_eq!(routed(&direct, "k", None), ["q2"]);
        assert_eq!(
            direct.remove_destination(&Destination::Queue("q2".into())),
            1
        );
        assert!(routed(&direct, "k", None).is_empty());
        assert_eq!(direct.len(), 1);

        let mut fanout = Bindings::new(ExchangeKind::Fanout);
        fanout.push(binding("a", ""));
        fanout.push(binding("b", "x"));
        assert_eq!(routed(&fanout, "anything", None), ["a", "b"]);

        let mut topic = Bindings::new(ExchangeKind::Topic);
        topic.push(binding("all", "#"));
        topic.push(binding("one", "*"));
        topic.push(binding("ab", "a.b"));
        assert_eq!(routed(&topic, "a.b", None), ["ab", "all"]);
        assert_eq!(routed(&topic, "a", None), ["all", "one"]);
        topic.retain(|b| b.routing_key != "#");
        assert_eq!(routed(&topic, "a", None), ["one"]);

        let mut headers = Bindings::new(ExchangeKind::Headers);
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("any".into()));
        args.insert("k".into(), AMQPValue::LongString("v".into()));
        headers.push(Binding {
            arguments: args,
            ..binding("h", "")
        });
        let mut h = FieldTable::default();
        h.insert("k".into(), AMQPValue::LongString("v".into()));
        assert_eq!(routed(&headers, "", Some(&h)), ["h"]);
        assert!(routed(&headers, "", None).is_empty());
    }

    #[test]
    fn compaction_keeps_order_and_routing() {
        let mut topic = Bindings::new(ExchangeKind::Topic);
        for i in 0..1000 {
            topic.push(binding(&format!("q{i}"), &format!("k.{i}.#")));
        }
        topic.retain(|b| {
            let Destination::Queue(q) = &b.destination else {
                return true;
            };
            q[1..].parse::<u32>().unwrap() % 10 == 0
        });
        assert_eq!(topic.len(), 100);
        assert!(topic.set.slots.len() < 1000, "compacted");
        let order: Vec<&str> = topic.iter().map(|b| b.routing_key.as_str()).collect();
        assert_eq!(order[..3], ["k.0.#", "k.10.#", "k.20.#"]);
        assert_eq!(routed(&topic, "k.20.x", None), ["q20"]);
        assert!(routed(&topic, "k.21.x", None).is_empty());
        assert!(topic.contains(&binding("q990", "k.990.#")));
        assert!(!topic.contains(&binding("q991", "k.991.#")));
    }

    #[test]
    fn a_snapshot_is_unaffected_by_later_changes() {
        let mut fanout = Bindings::new(ExchangeKind::Fanout);
        fanout.push(binding("a", ""));
        let snapshot = fanout.clone();
        fanout.push(binding("b", ""));
        fanout.remove_destination(&Destination::Queue("a".into()));
        assert_eq!(routed(&snapshot, "", None), ["a"]);
        assert_eq!(routed(&fanout, "", None), ["b"]);
    }
}
