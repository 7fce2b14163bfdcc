//! [`Declared`]: the queues and exchanges a client has declared recently, so that enqueues and
//! publishes do not repeat `queue.declare` / `exchange.declare` on every call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names declared by one client, with the time of the last declaration. Held by the client's
/// shared state (one per client, shared by its clones); the lock is held for a map lookup only.
#[derive(Debug, Default)]
pub(crate) struct Declared {
    at: Mutex<HashMap<String, Instant>>,
}

impl Declared {
    /// True when `name` was declared less than `max_age` ago.
    pub(crate) fn is_fresh(&self, name: &str, max_age: Duration) -> bool {
        let at = match self.at.lock() {
            Ok(at) => at,
            Err(poisoned) => poisoned.into_inner(),
        };
        at.get(name).is_some_and(|when| when.elapsed() < max_age)
    }

    /// Records that `name` was just declared.
    pub(crate) fn mark(&self, name: &str) {
        let mut at = match self.at.lock() {
            Ok(at) => at,
            Err(poisoned) => poisoned.into_inner(),
        };
        at.insert(name.to_owned(), Instant::now());
    }

    /// Forgets `name` (it turned out not to exist).
    pub(crate) fn forget(&self, name: &str) {
        let mut at = match self.at.lock() {
            Ok(at) => at,
            Err(poisoned) => poisoned.into_inner(),
        };
        at.remove(name);
    }
}
