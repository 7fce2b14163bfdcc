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
//! dropped, expired, purged), the queue calls [`Store::remove`]. A store that can read
//! messages back ([`Store::can_page`], [`Store::read`]) lets queues keep only an index entry
//! for persistent messages past the memory budget (see `memory`).
//!
//! The durable segment log implements this trait (`store::DurableQueues`, see `store/seam.rs`,
//! which also restores the recovered topology and messages at start-up).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::message::Message;
use crate::store::StoreError;
use crate::vhost::Topology;

/// Whether a message handed to a [`Store`] is already durable.
#[derive(Debug)]
pub(crate) enum Durability {
    /// Durable now; the publish may be confirmed at once.
    Durable,
    /// Durable once the sender fires `Ok(())`; dropping the sender means the write failed.
    // Constructed by the durable store of issue 3 (and the tests); the in-memory store never
    // waits.
    #[cfg_attr(not(test), allow(dead_code))]
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
    /// Whether [`read`](Self::read) can give back what [`enqueue`](Self::enqueue) was handed,
    /// so that queues may drop persistent bodies from memory (page them out).
    fn can_page(&self) -> bool {
        false
    }
    /// Reads messages `seqs` of `queue` back (ascending sequence numbers, all enqueued through
    /// [`enqueue`](Self::enqueue) and not removed), one result per sequence number, `None`
    /// where it cannot. Blocking (file reads); called under the queue's lock.
    fn read(&self, _vhost: &str, _queue: &str, seqs: &[u64]) -> Vec<Option<Arc<Message>>> {
        vec![None; seqs.len()]
    }
    /// Makes the durable part of `topology` (durable exchanges, durable non-exclusive queues,
    /// bindings between them) the stored topology of `vhost`. Called after each topology
    /// change, before the `-ok` goes out; blocking (a small file write and fsyncs).
    fn persist_topology(&self, _vhost: &str, _topology: &Topology) -> Result<(), StoreError> {
        Ok(())
    }
    /// The store's activity counters (fsyncs, bytes written, segments), where it keeps any
    /// (the management API's overview and `lepus_store_*` metrics).
    fn stats(&self) -> Option<crate::store::StoreStats> {
        None
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use lapin::options::*;
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    use super::*;

    /// A store that makes every record wait until the test releases it.
    #[derive(Debug, Default)]
    struct GatedStore {
        /// Senders of the tickets handed out, in enqueue order.
        gates: Mutex<Vec<oneshot::Sender<()>>>,
    }

    impl Store for GatedStore {
        fn enqueue(&self, _: &str, _: &str, _: u64, _: &Arc<Message>) -> Durability {
            let (tx, rx) = oneshot::channel();
            self.gates.lock().unwrap().push(tx);
            Durability::Pending(rx)
        }

        fn remove(&self, _: &str, _: &str, _: u64) {}
    }

    #[tokio::test]
    async fn confirms_of_persistent_messages_wait_for_the_store() {
        let store = Arc::new(GatedStore::default());
        let handle = crate::Broker::builder()
            .listen("127.0.0.1:0")
            .store(store.clone())
            .start()
            .await
            .unwrap();
        // `messages_unconfirmed` of the channel as the management API shows it.
        let unconfirmed = |handle: &crate::BrokerHandle| {
            let channels = handle.shared_for_tests().channels.list();
            channels.first().map(|ch| ch.unconfirmed())
        };
        let conn = Connection::connect(&handle.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("gated".into(), durable, FieldTable::default())
            .await
            .unwrap();
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let mut confirms = Vec::new();
        for props in [persistent.clone(), BasicProperties::default(), persistent] {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "gated".into(),
                    BasicPublishOptions::default(),
                    b"m",
                    props,
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        let second = confirms.pop().unwrap();
        let transient = confirms.pop().unwrap();
        let first = confirms.pop().unwrap();
        // The transient message needs no store: confirmed at once, alone.
        assert!(tokio::time::timeout(Duration::from_secs(5), transient)
            .await
            .unwrap()
            .unwrap()
            .is_ack());
        let mut first = Box::pin(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut first)
                .await
                .is_err(),
            "confirmed before the store made it durable"
        );
        assert_eq!(
            unconfirmed(&handle),
            Some(2),
            "two persistent publishes wait"
        );
        let mut gates = std::mem::take(&mut *store.gates.lock().unwrap());
        assert_eq!(gates.len(), 2);
        gates.remove(0).send(()).unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), first)
            .await
            .unwrap()
            .unwrap()
            .is_ack());
        assert_eq!(unconfirmed(&handle), Some(1));
        // A store that fails (drops its ticket) gets the publish nacked.
        drop(gates);
        assert!(tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap()
            .is_nack());
        assert_eq!(unconfirmed(&handle), Some(0));
        conn.close(200, "bye".into()).await.unwrap();
        handle.shutdown().await;
    }
}
