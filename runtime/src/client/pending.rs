//! The correlation map: calls awaiting their reply, keyed by `correlation-id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::Error;

/// What the reply consumer hands a waiting call: the reply body, or why none will come.
pub(crate) type ReplyResult = Result<Vec<u8>, Error>;

/// One waiting call.
#[derive(Debug)]
struct Waiter {
    /// The other end is held by the call's future; dropping it (the call gave up) makes the
    /// send fail, which is fine.
    reply: oneshot::Sender<ReplyResult>,
    /// The link generation the request was published on.
    generation: u64,
}

/// The map of pending calls, shared by the callers (insert, remove on drop) and the reply
/// consumer task (remove on reply, fail on connection loss).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    map: Arc<Mutex<HashMap<Uuid, Waiter>>>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Waiter>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still good to use.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a call; the returned guard forgets it when dropped.
    pub(crate) fn register(
        &self,
        generation: u64,
    ) -> (Uuid, oneshot::Receiver<ReplyResult>, PendingGuard<'_>) {
        let (tx, rx) = oneshot::channel();
        let id = Uuid::new_v4();
        self.lock().insert(
            id,
            Waiter {
                reply: tx,
                generation,
            },
        );
        let guard = PendingGuard {
            pending: self,
            id,
            armed: true,
        };
        (id, rx, guard)
    }

    /// Completes the call `id`; false when nobody waits for it any more.
    pub(crate) fn complete(&self, id: &Uuid, result: ReplyResult) -> bool {
        let waiter = self.lock().remove(id);
        match waiter {
            Some(waiter) => waiter.reply.send(result).is_ok(),
            None => false,
        }
    }

    /// Fails every call published on `generation` (or any generation when `None`).
    pub(crate) fn fail_all(&self, generation: Option<u64>, error: impl Fn() -> Error) -> usize {
        let failed: Vec<Waiter> = {
            let mut map = self.lock();
            let ids: Vec<Uuid> = map
                .iter()
                .filter(|(_, w)| generation.is_none_or(|g| w.generation == g))
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        let count = failed.len();
        for waiter in failed {
            let _ = waiter.reply.send(Err(error()));
        }
        count
    }

    /// The number of calls in flight.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Removes its call from the map when dropped: a call future dropped by its caller (or timed
/// out) leaves nothing behind, and a late reply for it is discarded. Borrows the map from the
/// call's `Client`, which outlives the call's future.
#[derive(Debug)]
pub(crate) struct PendingGuard<'a> {
    pending: &'a Pending,
    id: Uuid,
    /// False once the call's receiver resolved: whoever sent on it (or dropped its sender) had
    /// already taken the waiter out of the map, so there is nothing left to remove.
    armed: bool,
}

impl PendingGuard<'_> {
    /// The call's receiver resolved: its waiter is no longer in the map (`complete` and
    /// `fail_all` remove it before sending), so dropping the guard need not lock the map.
    pub(crate) fn settled(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_reach_their_own_caller_and_dropped_calls_are_forgotten() {
        let pending = Pending::default();
        let (a, rx_a, guard_a) = pending.register(1);
        let (b, rx_b, guard_b) = pending.register(1);
        assert_eq!(pending.len(), 2);
        drop(guard_b);
        assert_eq!(pending.len(), 1);
        assert!(!pending.complete(&b, Ok(vec![2])));
        assert!(pending.complete(&a, Ok(vec![1])));
        assert_eq!(pending.len(), 0);
        assert_eq!(rx_a.await.unwrap().unwrap(), vec![1]);
        guard_a.settled();
        assert!(rx_b.await.is_err());
    }

    #[tokio::test]
    async fn fail_all_only_touches_the_lost_generation() {
        let pending = Pending::default();
        let (_, rx_old, _g1) = pending.register(1);
        let (_, _rx_new, _g2) = pending.register(2);
        assert_eq!(pending.fail_all(Some(1), || Error::ConnectionLost), 1);
        assert!(matches!(rx_old.await.unwrap(), Err(Error::ConnectionLost)));
        assert_eq!(pending.len(), 1);
    }
}
