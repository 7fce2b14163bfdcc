//! The durability seam: how the delivery core asks a store to make a message durable, and how
//! a publisher confirm waits for it.
//!
//! When a persistent message (`delivery_mode = 2`) is enqueued on a durable queue, the channel
//! calls [`Persistence::enqueue`]. The store answers with a [`Durability`]: `Durable` when nothing
//! needs waiting for (the in-memory [`MemoryStore`], or a store that already synced), or
//! `Pending(rx)` whose sender fires once the record is on disk. A channel in confirm mode sends
//! `basic.ack` for the publish only after every pending ticket has fired, so a store can
//! group-commit (write a batch, fsync once, complete all its tickets). If the sender is dropped
//! without firing, the publish is nacked. When a message leaves a durable queue for good (acked,
//! dropped, expired, purged), the queue calls [`Persistence::remove`]. A store that can read
//! messages back ([`Persistence::can_page`], [`Persistence::read`]) lets queues keep only an index entry
//! for persistent messages past the memory budget (see `memory`).
//!
//! Durable topology changes go to [`Persistence::record_topology`] one by one, under the vhost's
//! topology lock (so the store sees them in the order they are made), and their `-ok` waits
//! for the [`Commit`] it returns; replies that cover several records (`tx.commit-ok`,
//! `purge-ok`) wait for a [`Persistence::barrier`].
//!
//! The durable segment log implements this trait (`store::DurableQueues`, see `durable_store`,
//! which also restores the recovered topology and messages at start-up).

use std::borrow::Cow;
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use tokio::sync::oneshot;

use crate::message::{Account, Message};
use crate::store::{Commit, StoreError};

/// A change of the durable topology, as the broker reports it to its [`Persistence`]. The broker
/// reports only durable entities (durable exchanges other than the predeclared ones, durable
/// queues that are not exclusive, bindings whose ends are both durable), and also reports a
/// change that changed nothing (a redeclare, an idempotent delete): the store then answers
/// with a commit of the topology as it stands.
///
/// It carries the entities' declared fields, not the broker's `Exchange`/`Queue`/`Binding`
/// (persistence sits below the broker state; `exchange` and `queue` build these).
#[derive(Debug, Clone)]
pub(crate) enum TopologyChange<'a> {
    /// `exchange.declare` of a durable exchange.
    ExchangeDeclared(ExchangeDeclared<'a>),
    /// A durable exchange was deleted (with every binding from or to it), or `exchange.delete`
    /// named an exchange that does not exist.
    ExchangeDeleted(&'a str),
    /// `queue.declare` of a durable, non-exclusive queue.
    QueueDeclared(QueueDeclared<'a>),
    /// A durable queue was deleted (with every binding to it and its messages).
    QueueDeleted(&'a str),
    /// A binding was added (or was there already).
    Bound(BindingChange<'a>),
    /// A binding was removed (or was not there).
    Unbound(BindingChange<'a>),
}

/// A durable exchange as declared (`exchange.declare`'s fields).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExchangeDeclared<'a> {
    /// The exchange's name.
    pub(crate) name: &'a str,
    /// Its type as AMQP names it (`direct`, `topic`, ...).
    pub(crate) kind: &'a str,
    /// `auto-delete`.
    pub(crate) auto_delete: bool,
    /// `internal`.
    pub(crate) internal: bool,
    /// The declare's arguments.
    pub(crate) arguments: &'a FieldTable,
}

/// A durable queue as declared (`queue.declare`'s fields).
#[derive(Debug, Clone)]
pub(crate) struct QueueDeclared<'a> {
    /// The queue's name.
    pub(crate) name: &'a str,
    /// `auto-delete`.
    pub(crate) auto_delete: bool,
    /// The declare's arguments (or, for a queue made without a table, the table its
    /// configuration stands for).
    pub(crate) arguments: Cow<'a, FieldTable>,
}

/// A binding between durable entities (`queue.bind`/`exchange.bind`'s fields).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindingChange<'a> {
    /// The source exchange.
    pub(crate) source: &'a str,
    /// Whether `destination` names an exchange (`exchange.bind`) rather than a queue.
    pub(crate) to_exchange: bool,
    /// The destination queue or exchange.
    pub(crate) destination: &'a str,
    /// The binding key.
    pub(crate) routing_key: &'a str,
    /// The bind's arguments.
    pub(crate) arguments: &'a FieldTable,
}

/// Whether a message handed to a [`Persistence`] is already durable.
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
pub(crate) trait Persistence: Send + Sync + std::fmt::Debug + 'static {
    /// Records `message` as enqueued on `queue` (in `vhost`) with the queue's sequence number.
    fn enqueue(&self, vhost: &str, queue: &str, seq: u64, message: &Arc<Message>) -> Durability;
    /// [`enqueue`](Self::enqueue) for a message dead-lettered from a durable queue, whose
    /// removal from there follows: a store that refuses publishes for lack of space must still
    /// take it, or the removal would lose it.
    fn enqueue_dead_letter(
        &self,
        vhost: &str,
        queue: &str,
        seq: u64,
        message: &Arc<Message>,
    ) -> Durability {
        self.enqueue(vhost, queue, seq, message)
    }
    /// Forgets the message `seq` of `queue` (acked, dropped or purged).
    fn remove(&self, vhost: &str, queue: &str, seq: u64);
    /// A count that changes whenever the store refuses writes it had accepted (a failed write
    /// that left the log intact). Read before a dead letter's copies are handed to
    /// [`enqueue_dead_letter`](Self::enqueue_dead_letter), passed to
    /// [`remove_moved`](Self::remove_moved).
    fn refusals(&self) -> u64 {
        0
    }
    /// [`remove`](Self::remove) of a dead letter whose copies were handed to
    /// [`enqueue_dead_letter`](Self::enqueue_dead_letter) after [`refusals`](Self::refusals)
    /// read `refusals`: the store withholds it if it has refused writes since (a copy may be
    /// among them), so the message is never gone from both queues.
    fn remove_moved(&self, vhost: &str, queue: &str, seq: u64, refusals: u64) {
        let _ = refusals;
        self.remove(vhost, queue, seq);
    }
    /// Whether [`read`](Self::read) can give back what [`enqueue`](Self::enqueue) was handed,
    /// so that queues may drop persistent bodies from memory (page them out).
    fn can_page(&self) -> bool {
        false
    }
    /// Reads messages `seqs` of `queue` back (ascending sequence numbers, all enqueued through
    /// [`enqueue`](Self::enqueue) and not removed), one result per sequence number, `None`
    /// where it cannot, each charged to `account` for what it holds while it lives. Blocking
    /// (file reads); called under the queue's lock.
    fn read(
        &self,
        _vhost: &str,
        _queue: &str,
        seqs: &[u64],
        _account: &Arc<dyn Account>,
    ) -> Vec<Option<Arc<Message>>> {
        vec![None; seqs.len()]
    }
    /// Records a durable topology change of `vhost`. Called under the vhost's topology write
    /// lock, so it must not block (log the change, return at once). Returns what the change's
    /// `-ok` waits for: `None` when there is nothing to wait for.
    fn record_topology(
        &self,
        _vhost: &str,
        _change: TopologyChange<'_>,
    ) -> Result<Option<Commit>, StoreError> {
        Ok(None)
    }
    /// What a reply covering everything handed to the store so far waits for: `None` when
    /// everything is durable already.
    fn barrier(&self) -> Option<Commit> {
        None
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

impl Persistence for MemoryStore {
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
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

    use super::*;
    use crate::field_value::table;

    /// A store that makes every record wait until the test releases it.
    #[derive(Debug, Default)]
    struct GatedStore {
        /// Senders of the tickets handed out, in enqueue order.
        gates: Mutex<Vec<oneshot::Sender<()>>>,
    }

    impl Persistence for GatedStore {
        fn enqueue(&self, _: &str, _: &str, _: u64, _: &Arc<Message>) -> Durability {
            let (tx, rx) = oneshot::channel();
            self.gates.lock().unwrap().push(tx);
            Durability::Pending(rx)
        }

        fn remove(&self, _: &str, _: &str, _: u64) {}
    }

    /// A broker on `store`, a connection to it and a channel.
    async fn broker_on(
        store: Arc<dyn Persistence>,
    ) -> (crate::BrokerHandle, Connection, lapin::Channel) {
        let handle = crate::Broker::builder()
            .listen("127.0.0.1:0")
            .store(store)
            .start()
            .await
            .unwrap();
        let conn = Connection::connect(&handle.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        (handle, conn, ch)
    }

    /// What the broker answered to a publish in confirm mode, which must come within 5 seconds.
    async fn confirmation(
        confirm: impl std::future::Future<Output = lapin::Result<Confirmation>>,
    ) -> Confirmation {
        tokio::time::timeout(Duration::from_secs(5), confirm)
            .await
            .unwrap()
            .unwrap()
    }

    const DURABLE: QueueDeclareOptions = QueueDeclareOptions {
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
    };

    /// A persistent message routed to several durable queues is confirmed once every one of
    /// them has stored it, not when the first has.
    #[tokio::test]
    async fn a_confirm_waits_for_every_durable_queue_the_message_reached() {
        let store = Arc::new(GatedStore::default());
        let (handle, conn, ch) = broker_on(store.clone()).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for q in ["one", "two"] {
            ch.queue_declare(q.into(), DURABLE, FieldTable::default())
                .await
                .unwrap();
            ch.queue_bind(
                q.into(),
                "amq.fanout".into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        let confirm = ch
            .basic_publish(
                "amq.fanout".into(),
                "".into(),
                BasicPublishOptions::default(),
                b"both",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        let mut confirm = Box::pin(confirm);
        for _ in 0..500 {
            if store.gates.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut gates = std::mem::take(&mut *store.gates.lock().unwrap());
        assert_eq!(gates.len(), 2, "one store ticket per durable queue");
        gates.remove(0).send(()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut confirm)
                .await
                .is_err(),
            "confirmed while one queue had not stored it"
        );
        gates.remove(0).send(()).unwrap();
        assert!(confirmation(confirm).await.is_ack());
        conn.close(200, "bye".into()).await.unwrap();
        handle.shutdown().await;
    }

    /// One call a [`RecordingStore`] saw: ("enqueue" or "remove", queue, sequence number, body
    /// of an enqueue).
    type Call = (&'static str, String, u64, Vec<u8>);

    /// A store that logs every enqueue and remove, in call order.
    #[derive(Debug, Default)]
    struct RecordingStore {
        log: Mutex<Vec<Call>>,
    }

    impl Persistence for RecordingStore {
        fn enqueue(&self, _: &str, queue: &str, seq: u64, message: &Arc<Message>) -> Durability {
            let entry = ("enqueue", queue.to_owned(), seq, message.body.to_vec());
            self.log.lock().unwrap().push(entry);
            Durability::Durable
        }

        fn remove(&self, _: &str, queue: &str, seq: u64) {
            let entry = ("remove", queue.to_owned(), seq, Vec::new());
            self.log.lock().unwrap().push(entry);
        }
    }

    /// A persistent message dead-lettered from one durable queue to another is recorded in
    /// its new queue before it is removed from its old one, so that a crash in between leaves
    /// it in one of them (or both), never in neither: for a rejection, an expiry and a
    /// length-limit drop.
    #[tokio::test]
    async fn dead_letters_are_stored_in_their_new_queue_before_leaving_the_old_one() {
        let store = Arc::new(RecordingStore::default());
        let (handle, conn, ch) = broker_on(store.clone()).await;
        ch.queue_declare("dead".into(), DURABLE, FieldTable::default())
            .await
            .unwrap();
        let sources = [
            ("src.reject", None),
            ("src.ttl", Some(("x-message-ttl", 20))),
            ("src.maxlen", Some(("x-max-length", 1))),
        ];
        for (name, limit) in sources {
            let mut args = table(&[
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString("dead".into()),
                ),
            ]);
            if let Some((key, value)) = limit {
                args.insert(key.into(), AMQPValue::LongInt(value));
            }
            ch.queue_declare(name.into(), DURABLE, args).await.unwrap();
        }
        let publish = |queue: &'static str, body: &'static [u8]| {
            let ch = ch.clone();
            async move {
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            }
        };
        publish("src.reject", b"rejected").await;
        publish("src.ttl", b"expired").await;
        publish("src.maxlen", b"dropped").await;
        publish("src.maxlen", b"kept").await;
        let got = ch
            .basic_get("src.reject".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        got.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        for _ in 0..500 {
            let dead = ch
                .queue_declare("dead".into(), passive, FieldTable::default())
                .await
                .unwrap();
            if dead.message_count() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = store.log.lock().unwrap().clone();
        let mut wrong = Vec::new();
        for body in [&b"rejected"[..], b"expired", b"dropped"] {
            let (source, seq) = log
                .iter()
                .find(|(op, q, _, b)| *op == "enqueue" && q.starts_with("src.") && b == body)
                .map(|(_, q, seq, _)| (q.clone(), *seq))
                .unwrap();
            let stored = log
                .iter()
                .position(|(op, q, _, b)| *op == "enqueue" && q == "dead" && b == body);
            let removed = log
                .iter()
                .position(|(op, q, s, _)| *op == "remove" && *q == source && *s == seq);
            let (Some(stored), Some(removed)) = (stored, removed) else {
                panic!(
                    "{}: stored {stored:?}, removed {removed:?}",
                    String::from_utf8_lossy(body)
                );
            };
            if removed < stored {
                wrong.push(format!(
                    "{}: left {source} (op {removed}) before it was stored in its dead-letter \
                     queue (op {stored})",
                    String::from_utf8_lossy(body)
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        conn.close(200, "bye".into()).await.unwrap();
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn confirms_of_persistent_messages_wait_for_the_store() {
        let store = Arc::new(GatedStore::default());
        let (handle, conn, ch) = broker_on(store.clone()).await;
        // `messages_unconfirmed` of the channel as the management API shows it.
        let unconfirmed = |handle: &crate::BrokerHandle| {
            let channels = handle.shared_for_tests().channels.list();
            channels.first().map(|ch| ch.unconfirmed())
        };
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
        assert!(confirmation(transient).await.is_ack());
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
        assert!(confirmation(first).await.is_ack());
        assert_eq!(unconfirmed(&handle), Some(1));
        // A store that fails (drops its ticket) gets the publish nacked.
        drop(gates);
        assert!(confirmation(second).await.is_nack());
        assert_eq!(unconfirmed(&handle), Some(0));
        conn.close(200, "bye".into()).await.unwrap();
        handle.shutdown().await;
    }
}
