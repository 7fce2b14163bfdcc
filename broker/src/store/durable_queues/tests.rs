//! Unit tests of [`DurableQueues`](super::DurableQueues).

use super::super::tests::TestDir;
use super::super::{BindingDef, ExchangeDef, StoreConfig};
use super::*;

fn msg<'a>(properties: &'a [u8], body: &'a [u8]) -> PersistentMessage<'a> {
    PersistentMessage {
        exchange: "",
        routing_key: "jobs",
        properties,
        body,
    }
}

fn open(dir: &TestDir) -> (DurableQueues, Recovered) {
    let (store, recovered) = Store::open(StoreConfig::new(&dir.0)).unwrap();
    (DurableQueues::new(Arc::new(store), &recovered), recovered)
}

/// Declares the durable queue `name` in `/` (no arguments) and waits for its commit.
async fn declare(queues: &DurableQueues, name: &str) {
    queues
        .declare_queue("/", name, false, Bytes::new())
        .unwrap()
        .await
        .unwrap();
}

/// Enqueues `message` as number `seq` on queue `queue` of `/` and waits for its commit.
async fn enqueue_committed(
    queues: &DurableQueues,
    queue: &str,
    seq: u64,
    message: PersistentMessage<'_>,
) {
    queues
        .enqueue("/", queue, seq, message)
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn messages_named_by_sequence_number_survive_reopen() {
    let dir = TestDir::new();
    let (queues, _) = open(&dir);
    declare(&queues, "jobs").await;
    // Sequence numbers may reach the store out of order (concurrent publishers).
    for seq in [0u64, 2, 1, 3, 4] {
        enqueue_committed(&queues, "jobs", seq, msg(b"p", &[seq as u8])).await;
    }
    queues.remove("/", "jobs", 1);
    queues.remove("/", "jobs", 3);
    assert_eq!(queues.read("/", "jobs", 2), Some(Bytes::from_static(&[2])));
    assert_eq!(queues.read("/", "jobs", 1), None);
    queues.store().close().await.unwrap();
    drop(queues);

    let (queues, recovered) = open(&dir);
    let store = queues.store().clone();
    let bodies: Vec<u8> = recovered.queues[0]
        .messages
        .iter()
        .map(|&p| store.read(p).unwrap().body[0])
        .collect();
    assert_eq!(bodies, vec![0, 2, 4]);
    // The broker puts them back under new sequence numbers and acks one.
    for (seq, &position) in recovered.queues[0].messages.iter().enumerate() {
        queues.restore("/", "jobs", 100 + seq as u64, position);
    }
    queues.remove("/", "jobs", 101);
    assert_eq!(store.stats().live_messages, 2);
}

#[tokio::test]
async fn removes_failing_after_the_writer_failed_are_logged_once_a_period() {
    let dir = TestDir::new();
    let mut config = StoreConfig::new(&dir.0);
    config.segment_size = 4096;
    let (store, recovered) = Store::open(config).unwrap();
    let queues = DurableQueues::new(Arc::new(store), &recovered);
    declare(&queues, "q").await;
    for seq in 0..100 {
        enqueue_committed(&queues, "q", seq, msg(b"", &[1; 100])).await;
    }
    // Pull the directory away: the next segment cannot be created, the writer fails for
    // good, and every ack's remove fails after it.
    std::fs::remove_dir_all(dir.0.join("segments")).unwrap();
    let failed = queues.enqueue("/", "q", 100, msg(b"", &[2; 4000])).unwrap();
    assert!(failed.await.is_err());
    for seq in 0..100 {
        queues.remove("/", "q", seq);
    }
    let counts = queues.remove_failures.lock().unwrap().counts();
    assert_eq!(counts, (100, 99), "100 failed removes, one line logged");
}

#[tokio::test]
async fn a_removal_that_overtakes_its_enqueue_cancels_it() {
    let dir = TestDir::new();
    let (queues, _) = open(&dir);
    declare(&queues, "q").await;
    queues.remove("/", "q", 7); // a no-ack consumer took it before the store saw it
    assert!(queues.enqueue("/", "q", 7, msg(b"", b"gone")).is_none());
    assert_eq!(queues.store().stats().live_messages, 0);
    enqueue_committed(&queues, "q", 8, msg(b"", b"kept")).await;
    assert_eq!(queues.store().stats().live_messages, 1);
}

#[tokio::test]
async fn unknown_queues_nack_and_deleted_queues_forget() {
    let dir = TestDir::new();
    let (queues, _) = open(&dir);
    let rx = queues.enqueue("/", "nope", 0, msg(b"", b"x")).unwrap();
    assert!(
        rx.await.is_err(),
        "no store behind it: the confirm must be a nack"
    );

    declare(&queues, "q").await;
    enqueue_committed(&queues, "q", 0, msg(b"", b"a")).await;
    queues.purge("/", "q").unwrap();
    assert_eq!(queues.store().stats().live_messages, 0);
    enqueue_committed(&queues, "q", 1, msg(b"", b"b")).await;
    queues.delete_queue("/", "q").unwrap().await.unwrap();
    assert_eq!(queues.store().stats().live_messages, 0);
    assert!(queues.store().definitions().queues.is_empty());
    queues.delete_queue("/", "q").unwrap().await.unwrap();
}

#[tokio::test]
async fn redeclaring_keeps_ids_and_a_deleted_queue_loses_its_messages() {
    let dir = TestDir::new();
    let (queues, _) = open(&dir);
    let exchange = ExchangeDef {
        vhost: "/".into(),
        name: "x".into(),
        kind: "fanout".into(),
        auto_delete: false,
        internal: false,
        arguments: Bytes::new(),
    };
    let binding = BindingDef {
        vhost: "/".into(),
        source: "x".into(),
        destination_kind: super::super::BindingDestination::Queue,
        destination: "a".into(),
        routing_key: String::new(),
        arguments: Bytes::new(),
    };
    let store = queues.store().clone();
    store
        .declare_exchange(exchange.clone())
        .unwrap()
        .await
        .unwrap();
    for name in ["a", "b"] {
        declare(&queues, name).await;
    }
    store.bind(binding.clone()).unwrap().await.unwrap();
    let ids = store.definitions().queues;
    enqueue_committed(&queues, "a", 0, msg(b"", b"a0")).await;
    enqueue_committed(&queues, "b", 0, msg(b"", b"b0")).await;
    // Same topology again: nothing is appended, ids stay.
    let records = store.stats().records;
    declare(&queues, "b").await;
    store.bind(binding.clone()).unwrap().await.unwrap();
    store
        .declare_exchange(exchange.clone())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(store.stats().records, records);
    assert_eq!(store.definitions().queues, ids);
    // Queue b deleted: its message goes with it.
    queues.delete_queue("/", "b").unwrap().await.unwrap();
    assert_eq!(store.stats().live_messages, 1);
    assert!(queues
        .enqueue("/", "b", 1, msg(b"", b"b1"))
        .unwrap()
        .await
        .is_err());
    store.close().await.unwrap();
    drop((queues, store));

    let (_, recovered) = open(&dir);
    assert_eq!(recovered.definitions.exchanges, vec![exchange]);
    assert_eq!(recovered.definitions.bindings, vec![binding]);
    assert_eq!(recovered.queues.len(), 1);
    assert_eq!(recovered.queues[0].messages.len(), 1);
}

#[test]
fn slot_sweeps_tombstones() {
    let mut slot = Slot::new(QueueId(1));
    let at = |seq: u64| Position {
        segment: 1,
        offset: 8 + seq as u32 * 30,
        len: 30,
    };
    for seq in 0..1000 {
        slot.insert(seq, at(seq));
    }
    // Keep the head, ack the rest out of order: tombstones are swept before they dominate.
    for seq in (1..1000).rev() {
        assert_eq!(slot.take(seq), Some(at(seq)));
        let live = seq as usize;
        assert!(slot.messages.len() <= 2 * live + 64, "seq {seq}");
    }
    assert_eq!(slot.take(5), None);
    assert_eq!(slot.take(0), Some(at(0)));
    assert!(slot.messages.is_empty());
}
