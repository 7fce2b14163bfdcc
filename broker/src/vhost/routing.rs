//! Routing: a published message's way from its exchange through exchange-to-exchange
//! bindings and alternate exchanges to the set of queues ([`Routed`]), each reached once.

use super::*;

/// What routing a message found.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    /// The queues it goes to, each once.
    pub(crate) queues: Vec<Arc<Queue>>,
    /// The work routing took (see `fairness`), for the publisher's task budget.
    pub(crate) work: usize,
}

/// A route in progress (see [`VHost::route`]).
pub(super) struct RouteWalk<'k> {
    /// The exchange published to, until it is routed through.
    pub(super) first: Option<&'k str>,
    /// Exchanges reached through exchange-to-exchange bindings or alternates, to route next.
    pub(super) pending: Vec<String>,
    /// Every exchange queued for routing so far except the first (with it, a cycle ends).
    pub(super) visited: HashSet<String>,
    /// The result so far.
    pub(super) routed: Routed,
    /// Past a few queues, duplicates are removed at the end rather than checked per queue.
    pub(super) unsorted: bool,
}

/// Queues routed to before duplicates are dropped by sorting rather than by a scan per queue.
pub(super) const DEDUP_SCAN: usize = 16;

impl RouteWalk<'_> {
    /// Follows a matched destination from exchange `from`: a queue that exists joins the
    /// result, an exchange joins the walk. True when it led somewhere.
    pub(super) fn reach(
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
    pub(super) fn push_exchange(&mut self, name: &str, from: &str) {
        if self.visited.is_empty() {
            self.visited.insert(from.to_owned());
        }
        if self.visited.insert(name.to_owned()) {
            self.pending.push(name.to_owned());
        }
    }
}

impl VHost {
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
    pub(super) fn walk<'k>(
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
}
