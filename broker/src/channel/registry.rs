//! The registry of open channels across all connections, for the management API
//! (`/api/channels`, `lepusctl list_channels`).
//!
//! Concurrency: one `Mutex<BTreeMap>` touched when a channel opens, when it is dropped by its
//! connection task, and by management requests; never on the message path. Each entry holds a
//! clone of the channel's [`ChannelShared`] `Arc` (the others are held by the connection
//! task's [`crate::channel::Channel`] and by the channel's consumers); an entry lives exactly
//! as long as the [`ChannelRegistration`] guard the connection task keeps in its `Channel`, so
//! every way a channel goes away (close-ok, channel error, connection end) unregisters it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ChannelShared;

/// Open channels, keyed by (connection id, channel number).
#[derive(Debug, Default)]
pub(crate) struct Channels {
    map: Mutex<BTreeMap<(u64, u16), Arc<ChannelShared>>>,
    /// Channels registered so far (`rabbitmq_channels_opened_total`).
    opened: AtomicU64,
    /// Registered channels that went away (`rabbitmq_channels_closed_total`).
    closed: AtomicU64,
}

impl Channels {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(u64, u16), Arc<ChannelShared>>> {
        // Poison-tolerant: each mutation is one insert or remove.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an opened channel; dropping the returned guard forgets it.
    pub(crate) fn register(self: &Arc<Self>, shared: &Arc<ChannelShared>) -> ChannelRegistration {
        self.lock()
            .insert((shared.connection_id, shared.id), shared.clone());
        self.opened.fetch_add(1, Ordering::Relaxed);
        ChannelRegistration {
            registry: self.clone(),
            shared: shared.clone(),
        }
    }

    /// Every open channel, ordered by connection id, then channel number.
    pub(crate) fn list(&self) -> Vec<Arc<ChannelShared>> {
        self.lock().values().cloned().collect()
    }

    /// How many channels are open.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// (opened, closed) channels since the broker started.
    pub(crate) fn churn(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }
}

/// Keeps one channel listed in [`Channels`]; owned by the connection task's `Channel`.
#[derive(Debug)]
pub(crate) struct ChannelRegistration {
    /// The registry (shared with `BrokerShared` and every other registration).
    registry: Arc<Channels>,
    /// The registered channel, to tell it from a later channel under the same number.
    shared: Arc<ChannelShared>,
}

impl Drop for ChannelRegistration {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        let key = (self.shared.connection_id, self.shared.id);
        // A reopened channel with the same number has its own entry: leave it alone.
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &self.shared)) {
            map.remove(&key);
        }
        drop(map);
        self.registry.closed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(conn: u64, number: u16) -> Arc<ChannelShared> {
        let outbox = crate::outbox::Outbox::detached();
        Arc::new(ChannelShared::new(number, conn, outbox, false))
    }

    #[test]
    fn a_registration_lists_the_channel_until_dropped() {
        let registry = Arc::new(Channels::default());
        let a = registry.register(&channel(1, 2));
        let b = registry.register(&channel(1, 1));
        let c = registry.register(&channel(0, 7));
        let listed: Vec<(u64, u16)> = registry
            .list()
            .iter()
            .map(|s| (s.connection_id, s.id))
            .collect();
        assert_eq!(listed, vec![(0, 7), (1, 1), (1, 2)]);
        drop(b);
        assert_eq!(registry.count(), 2);
        drop((a, c));
        assert_eq!(registry.count(), 0);
    }

    #[test]
    fn dropping_a_stale_registration_keeps_the_reopened_channel() {
        let registry = Arc::new(Channels::default());
        let old = registry.register(&channel(3, 1));
        let new = registry.register(&channel(3, 1));
        drop(old);
        assert_eq!(registry.count(), 1, "the reopened channel stays listed");
        drop(new);
        assert_eq!(registry.count(), 0);
    }
}
