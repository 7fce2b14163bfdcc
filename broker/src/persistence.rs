//! The durability seam: how the delivery core asks a store to make a message durable, and how
//! a publisher confirm waits for it.
//!
//! When a persistent message (`delivery_mode = 2`) is enqueued on a durable queue, the channel
//! calls [`Store::enqueue`]. The store answers with a [`Durability`]: `Durable` when nothing
//! needs waiting for (the in-memory [`MemoryStore`], or a store that already synced), or
//! `Pending(rx)` whose sender fires once the record is on disk. A channel in confirm mode sends
//! `basic.ack` for the publish only after every pending ticket has fired, so a store can
//! group-commit (write a batch, fsync once, complete all its tickets). If the sender is dropped
//! without firing, the publish is nacked. When a message leaves a durable queue for good (acked,
//! dropped, expired, purged), the queue calls [`Store::remove`].
//!
//! The durable segment log (issue 3) implements this trait; recovery on start-up is not part of
//! this seam yet. The trait is crate-private until the store lands in `store/`.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::message::Message;

/// Whether a message handed to a [`Store`] is already durable.
#[derive(Debug)]
pub(crate) enum Durability {
    /// Durable now; the publish may be confirmed at once.
    Durable,
    /// Durable once the sender fires `Ok(())`; dropping the sender means the write failed.
    // Constructed by the durable store of issue 3; the in-memory store never waits.
    #[allow(dead_code)]
    Pending(oneshot::Receiver<()>),
}

/// Where persistent messages of durable queues are made durable. Called from the publishing
/// connection's task with no lock held; implementations must not block for I/O (hand the
/// record to a writer task and return `Pending`).
pub(crate) trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Records `message` as enqueued on `queue` (in `vhost`) with the queue's sequence number.
    fn enqueue(&self, vhost: &str, queue: &str, seq: u64, message: &Arc<Message>) -> Durability;
    /// Forgets the message `seq` of `queue` (acked, dropped or purged).
    fn remove(&self, vhost: &str, queue: &str, seq: u64);
}

/// The store of an in-memory broker: everything is "durable" at once, nothing is written.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore;

impl Store for MemoryStore {
    fn enqueue(&self, _: &str, _: &str, _: u64, _: &Arc<Message>) -> Durability {
        Durability::Durable
    }

    fn remove(&self, _: &str, _: &str, _: u64) {}
}
