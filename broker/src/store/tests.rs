//! Store-level tests: reopen, torn tails cut at every byte, corruption refusal, group commit,
//! compaction, and a randomized model check across reopens.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::segment::{list_segments, segment_path};
use super::*;

/// A fresh directory (`tempfile`), removed on drop; `.0` is its path.
pub(super) struct TestDir(
    pub(super) PathBuf,
    // Held for its `Drop`, which removes the directory.
    #[allow(dead_code)] tempfile::TempDir,
);

impl TestDir {
    pub(super) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lepus-store-")
            .tempdir()
            .unwrap();
        Self(dir.path().to_path_buf(), dir)
    }
}

fn msg<'a>(properties: &'a [u8], body: &'a [u8]) -> PersistentMessage<'a> {
    PersistentMessage {
        exchange: "amq.direct",
        routing_key: "rk",
        properties,
        body,
    }
}

fn open(dir: &Path) -> (Store, Recovered) {
    Store::open(StoreConfig::new(dir)).unwrap()
}

/// A fresh data directory whose only file is `segment` (as segment 1) cut after `cut` bytes,
/// as a crash leaves it when nothing from byte `cut` on reached the disk; and the store
/// opened on it.
fn open_cut(segment: &[u8], cut: usize) -> (TestDir, Store, Recovered) {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.0.join("segments")).unwrap();
    std::fs::write(segment_path(&dir.0, 1), &segment[..cut]).unwrap();
    let (store, recovered) = open(&dir.0);
    (dir, store, recovered)
}

fn open_small(dir: &Path, segment_size: u32) -> (Store, Recovered) {
    let mut config = StoreConfig::new(dir);
    config.segment_size = segment_size;
    Store::open(config).unwrap()
}

fn queue(store: &Store, name: &str) -> QueueId {
    // The commit is not awaited: the records that follow commit after it.
    store
        .declare_queue("/", name, false, Bytes::new())
        .unwrap()
        .0
}

/// Bodies of `queue`'s recovered messages, in order.
fn bodies(store: &Store, recovered: &Recovered, queue: QueueId) -> Vec<Bytes> {
    recovered
        .queues
        .iter()
        .find(|q| q.id == queue)
        .unwrap()
        .messages
        .iter()
        .map(|&position| store.read(position).unwrap().body)
        .collect()
}

fn segment_files(dir: &Path) -> Vec<u32> {
    list_segments(dir).unwrap()
}

#[tokio::test]
async fn reopen_restores_topology_and_messages_in_order() {
    let dir = TestDir::new();
    let (store, recovered) = open(&dir.0);
    assert!(recovered.queues.is_empty());
    let exchange = ExchangeDef {
        vhost: "/".into(),
        name: "tasks".into(),
        kind: "topic".into(),
        auto_delete: false,
        internal: false,
        arguments: Bytes::from_static(b"\x00\x00\x00\x00"),
    };
    store
        .declare_exchange(exchange.clone())
        .unwrap()
        .await
        .unwrap();
    let work = store
        .declare_queue("/", "work", false, Bytes::from_static(b"args"))
        .unwrap()
        .0;
    let binding = BindingDef {
        vhost: "/".into(),
        source: "tasks".into(),
        destination_kind: BindingDestination::Queue,
        destination: "work".into(),
        routing_key: "jobs.#".into(),
        arguments: Bytes::new(),
    };
    store.bind(binding.clone()).unwrap().await.unwrap();
    for i in 0..5u8 {
        let (_, commit) = store.enqueue(work, msg(&[0x10, 0, 2], &[i; 3])).unwrap();
        commit.await.unwrap();
    }
    store.close().await.unwrap();
    drop(store);

    let (store, recovered) = open(&dir.0);
    let defs = &recovered.definitions;
    assert_eq!(defs.exchanges, vec![exchange]);
    assert_eq!(defs.bindings, vec![binding]);
    let queue_def = defs.queue("/", "work").unwrap();
    assert_eq!(queue_def.id, work);
    assert_eq!(&queue_def.arguments[..], b"args");
    assert_eq!(
        bodies(&store, &recovered, work),
        (0..5u8)
            .map(|i| Bytes::from(vec![i; 3]))
            .collect::<Vec<_>>()
    );
    let first = store.read(recovered.queues[0].messages[0]).unwrap();
    assert_eq!(first.queue, work);
    assert_eq!(&first.properties[..], &[0x10, 0, 2]);
    // Re-declaring keeps the id; a new queue gets a new one.
    assert_eq!(queue(&store, "work"), work);
    assert_ne!(queue(&store, "other"), work);
}

#[tokio::test]
async fn acks_and_purges_survive_reopen() {
    let dir = TestDir::new();
    let (store, _) = open(&dir.0);
    let q = queue(&store, "q");
    let mut positions = Vec::new();
    for i in 0..6u8 {
        let (position, commit) = store.enqueue(q, msg(&[], &[i])).unwrap();
        commit.await.unwrap();
        positions.push(position);
    }
    store.remove(q, positions[1]).unwrap().await.unwrap();
    store.remove(q, positions[4]).unwrap().await.unwrap();
    // A second remove of the same message is refused: it would free a live message's segment.
    assert!(matches!(
        store.remove(q, positions[1]),
        Err(StoreError::NoMessage { .. })
    ));
    store.close().await.unwrap();
    drop(store);

    let (store, recovered) = open(&dir.0);
    assert_eq!(
        recovered.queues[0].messages,
        vec![positions[0], positions[2], positions[3], positions[5]]
    );
    store.purge(q).unwrap().await.unwrap();
    let (_, commit) = store.enqueue(q, msg(&[], b"after purge")).unwrap();
    commit.await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let (store, recovered) = open(&dir.0);
    assert_eq!(
        bodies(&store, &recovered, q),
        vec![Bytes::from_static(b"after purge")]
    );
}

#[tokio::test]
async fn deleted_queue_loses_its_messages_and_id() {
    let dir = TestDir::new();
    let (store, _) = open(&dir.0);
    let doomed = queue(&store, "doomed");
    let kept = queue(&store, "kept");
    store
        .bind(BindingDef {
            vhost: "/".into(),
            source: "amq.direct".into(),
            destination_kind: BindingDestination::Queue,
            destination: "doomed".into(),
            routing_key: "k".into(),
            arguments: Bytes::new(),
        })
        .unwrap()
        .await
        .unwrap();
    store
        .enqueue(doomed, msg(&[], b"x"))
        .unwrap()
        .1
        .await
        .unwrap();
    store
        .enqueue(kept, msg(&[], b"y"))
        .unwrap()
        .1
        .await
        .unwrap();
    store.delete_queue(doomed).unwrap().await.unwrap();
    assert!(matches!(
        store.enqueue(doomed, msg(&[], b"z")),
        Err(StoreError::UnknownQueue(id)) if id == doomed
    ));
    store.close().await.unwrap();
    drop(store);

    let (store, recovered) = open(&dir.0);
    assert_eq!(recovered.definitions.queues.len(), 1);
    assert!(recovered.definitions.bindings.is_empty());
    assert_eq!(
        bodies(&store, &recovered, kept),
        vec![Bytes::from_static(b"y")]
    );
    // A queue declared again under the old name gets a fresh id: the old records stay dead.
    let again = queue(&store, "doomed");
    assert!(again.0 > kept.0);
    store.close().await.unwrap();
    drop(store);
    let (_, recovered) = open(&dir.0);
    let again_queue = recovered.queues.iter().find(|q| q.id == again).unwrap();
    assert!(again_queue.messages.is_empty());
}

/// Writes a small log (D = queue declare, E = enqueue, R = remove, P = purge): D E(a) E(b) R(a)
/// E(c) P E(d) E(e), and returns the record boundaries and the expected live bodies after each
/// whole record (`None` while the queue is not declared).
async fn small_log(dir: &Path) -> (QueueId, Vec<u64>, Vec<Option<Vec<&'static [u8]>>>) {
    let (store, _) = open(dir);
    let q = queue(&store, "q");
    store.barrier().await.unwrap();
    let mut boundaries = vec![SEGMENT_HEADER_LEN, boundaries_end(&store)];
    let mut expected: Vec<Option<Vec<&'static [u8]>>> = vec![None, Some(vec![])];
    let mut live: Vec<(Position, &'static [u8])> = Vec::new();
    let mut last = |live: &Vec<(Position, &'static [u8])>, boundary: u64| {
        boundaries.push(boundary);
        expected.push(Some(live.iter().map(|(_, body)| *body).collect()));
    };
    for step in 0..7 {
        match step {
            2 => {
                let (position, _) = live.remove(0);
                store.remove(q, position).unwrap().await.unwrap();
                last(&live, boundaries_end(&store));
            }
            4 => {
                store.purge(q).unwrap().await.unwrap();
                live.clear();
                last(&live, boundaries_end(&store));
            }
            _ => {
                let body: &'static [u8] = [&b"a"[..], b"bb", b"", b"ccc", b"", b"dddd", b"e"][step];
                let (position, commit) = store.enqueue(q, msg(&[0x80, 0], body)).unwrap();
                commit.await.unwrap();
                live.push((position, body));
                last(&live, u64::from(position.offset + position.len));
            }
        }
    }
    store.close().await.unwrap();
    (q, boundaries, expected)
}

const SEGMENT_HEADER_LEN: u64 = 8;

/// End of the log as the writer has it (all commits awaited, so everything is written).
fn boundaries_end(store: &Store) -> u64 {
    let path = segment_path(store.data_dir(), 1);
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn recovery_keeps_exactly_the_whole_records_before_any_cut() {
    let source = TestDir::new();
    let (q, boundaries, expected) = small_log(&source.0).await;
    let segment = std::fs::read(segment_path(&source.0, 1)).unwrap();
    assert!(
        !source.0.join("definitions").exists(),
        "the queue's declare is a log record, not a snapshot"
    );
    assert_eq!(*boundaries.last().unwrap(), segment.len() as u64);

    for cut in 0..=segment.len() {
        let (dir, store, recovered) = open_cut(&segment, cut);
        // The whole records before the cut: the last boundary at or below it.
        let whole = boundaries
            .iter()
            .rposition(|&b| b <= cut as u64)
            .unwrap_or(0);
        let kept_len = boundaries[whole];
        let want: Option<Vec<Bytes>> = expected[whole]
            .as_ref()
            .map(|bodies| bodies.iter().map(|b| Bytes::from_static(b)).collect());
        let got = recovered
            .queues
            .iter()
            .any(|rq| rq.id == q)
            .then(|| bodies(&store, &recovered, q));
        assert_eq!(got, want, "cut at byte {cut}");
        let torn = if cut < 8 {
            cut as u64
        } else {
            cut as u64 - kept_len
        };
        assert_eq!(recovered.torn_tail_bytes, torn, "cut at byte {cut}");
        // The torn tail is gone from disk (a torn header is rewritten whole).
        assert_eq!(
            std::fs::metadata(segment_path(&dir.0, 1)).unwrap().len(),
            kept_len,
            "cut at byte {cut}"
        );
        // And the log keeps working after the cut (the queue declared again if its declare
        // was cut).
        let q = queue(&store, "q");
        let (position, commit) = store.enqueue(q, msg(&[], b"new")).unwrap();
        commit.await.unwrap();
        if want.is_some() {
            assert_eq!(u64::from(position.offset), kept_len);
        }
        store.close().await.unwrap();
        drop(store);
        let (store, recovered) = open(&dir.0);
        let mut want = want.unwrap_or_default();
        want.push(Bytes::from_static(b"new"));
        assert_eq!(
            bodies(&store, &recovered, q),
            want,
            "reopen after cut at {cut}"
        );
    }
}

fn open_err(dir: &Path) -> StoreError {
    Store::open(StoreConfig::new(dir)).unwrap_err()
}

#[tokio::test]
async fn corruption_before_the_tail_is_refused() {
    let dir = TestDir::new();
    let (_, boundaries, _) = small_log(&dir.0).await;
    let path = segment_path(&dir.0, 1);
    let pristine = std::fs::read(&path).unwrap();

    // A flipped bit in the first record's body: good records follow, so refuse.
    let mut bytes = pristine.clone();
    bytes[boundaries[1] as usize - 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = open_err(&dir.0);
    assert!(err.is_corruption(), "{err}");
    assert!(
        matches!(
            err,
            StoreError::CorruptSegment { offset, reason: "checksum mismatch", .. }
                if offset == boundaries[0]
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "nothing was truncated"
    );

    // A bad length in the middle.
    let mut bytes = pristine.clone();
    bytes[boundaries[2] as usize..boundaries[2] as usize + 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        open_err(&dir.0),
        StoreError::CorruptSegment { offset, reason: "bad record length", .. }
            if offset == boundaries[2]
    ));

    // A damaged segment header.
    let mut bytes = pristine.clone();
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        open_err(&dir.0),
        StoreError::CorruptSegment {
            offset: 0,
            reason: "bad segment header",
            ..
        }
    ));

    // A damaged *last* record is a torn tail: dropped, the rest kept.
    let mut bytes = pristine.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.queues[0].messages.len(), 1);
    assert_eq!(
        recovered.torn_tail_bytes,
        pristine.len() as u64 - boundaries[boundaries.len() - 2]
    );

    // Zero-filled blocks after the last record (file grown, data never written) are a torn
    // tail too.
    let mut bytes = pristine.clone();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, &bytes).unwrap();
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.queues[0].messages.len(), 2);
    assert_eq!(recovered.torn_tail_bytes, 4096);
    assert_eq!(std::fs::read(&path).unwrap(), pristine);

    // A torn tail in a segment that is not the last one is corruption.
    let mut bytes = pristine.clone();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(segment_path(&dir.0, 2), &pristine[..8]).unwrap();
    assert!(matches!(
        open_err(&dir.0),
        StoreError::CorruptSegment {
            reason: "truncated record",
            ..
        }
    ));

    // A damaged definitions file.
    std::fs::write(dir.0.join("definitions"), b"LPDF garbage").unwrap();
    assert!(matches!(
        open_err(&dir.0),
        StoreError::CorruptDefinitions { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Holding the (std) gate across awaits is the point: it keeps the writer thread, not a task,
// from taking a batch; the awaited tasks never touch the gate.
#[allow(clippy::await_holding_lock)]
async fn group_commit_shares_one_fsync_among_concurrent_appenders() {
    let dir = TestDir::new();
    let (store, _) = open(&dir.0);
    let store = std::sync::Arc::new(store);
    let q = queue(&store, "q");
    store.barrier().await.unwrap();
    let before = store.stats();

    // Hold the writer at its gate while 64 tasks append 8 records each.
    let gate = store.shared.gate.lock().unwrap();
    let (appended_tx, mut appended_rx) = tokio::sync::mpsc::channel(64);
    let mut tasks = Vec::new();
    for t in 0..64u8 {
        let store = store.clone();
        let appended_tx = appended_tx.clone();
        tasks.push(tokio::spawn(async move {
            let commits: Vec<Commit> = (0..8u8)
                .map(|i| store.enqueue(q, msg(&[], &[t, i])).unwrap().1)
                .collect();
            appended_tx.send(()).await.unwrap();
            for commit in commits {
                commit.await.unwrap();
            }
        }));
    }
    for _ in 0..64 {
        appended_rx.recv().await.unwrap();
    }
    drop(gate);
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.records - before.records, 512);
    assert_eq!(stats.batches - before.batches, 1);
    assert_eq!(stats.fsyncs - before.fsyncs, 1, "{stats:?}");

    // Ungated: 32 appenders, each waiting for its commit before the next append. Batches form
    // on their own while an fsync runs.
    let before = store.stats();
    let mut tasks = Vec::new();
    for t in 0..32u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u8 {
                store
                    .enqueue(q, msg(&[], &[t, i]))
                    .unwrap()
                    .1
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.stats();
    let records = after.records - before.records;
    let fsyncs = after.fsyncs - before.fsyncs;
    println!("group commit: {records} records, {fsyncs} fsyncs");
    assert_eq!(records, 640);
    assert!(fsyncs < records, "{fsyncs} fsyncs for {records} records");
}

#[tokio::test]
async fn fsync_policy_never_commits_without_fsync() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ] {
        let dir = TestDir::new();
        let mut config = StoreConfig::new(&dir.0);
        config.fsync = policy;
        let (store, _) = Store::open(config).unwrap();
        let q = queue(&store, "q");
        for i in 0..10u8 {
            store.enqueue(q, msg(&[], &[i])).unwrap().1.await.unwrap();
        }
        assert_eq!(store.stats().fsyncs, 0, "{policy:?}");
        store.close().await.unwrap();
        assert_eq!(store.stats().fsyncs, 1, "close syncs under {policy:?}");
        drop(store);
        let (_, recovered) = open(&dir.0);
        assert_eq!(recovered.queues[0].messages.len(), 10);
    }
}

#[tokio::test]
async fn compaction_deletes_fully_acked_segments() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let q = queue(&store, "q");
    let body = [7u8; 980]; // records of 1015 bytes: 4 fit a 4 KiB segment
    let mut positions = Vec::new();
    for _ in 0..20 {
        let (position, commit) = store.enqueue(q, msg(&[], &body)).unwrap();
        commit.await.unwrap();
        positions.push(position);
    }
    // ~1 KiB records in 4 KiB segments: 4 per segment, 5 segments.
    assert_eq!(segment_files(&dir.0), vec![1, 2, 3, 4, 5]);

    // Ack everything but the first message (in segment 1) and the last two.
    for &position in &positions[1..18] {
        store.remove(q, position).unwrap().await.unwrap();
    }
    // Segments 2-4 hold only acked enqueues, so they go; segment 1 keeps its live message,
    // and the acks (in segment 6, the active one) are kept with it.
    let files = segment_files(&dir.0);
    assert!(files.contains(&1), "{files:?}");
    assert!(
        !files.contains(&2) && !files.contains(&3) && !files.contains(&4),
        "{files:?}"
    );
    assert_eq!(store.stats().live_messages, 3);

    // Reopen: exactly the unacked ones come back, in order.
    store.close().await.unwrap();
    drop(store);
    let (store, recovered) = open_small(&dir.0, 4096);
    assert_eq!(
        recovered.queues[0].messages,
        vec![positions[0], positions[18], positions[19]]
    );

    // Ack the rest: disk use falls back to the active segment (segment 1, which holds the
    // queue's declare, once a topology snapshot covers it).
    for position in recovered.queues[0].messages.clone() {
        store.remove(q, position).unwrap().await.unwrap();
    }
    store.wait_for_snapshot();
    let files = segment_files(&dir.0);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(store.stats().live_messages, 0);
    assert!(matches!(
        store.read(positions[0]),
        Err(StoreError::NoMessage { .. })
    ));
    store.close().await.unwrap();
    drop(store);
    let (_, recovered) = open_small(&dir.0, 4096);
    assert!(recovered.queues[0].messages.is_empty());
}

#[tokio::test]
async fn an_ack_record_outlives_the_segment_it_acks_into() {
    // Segment 1: a, b. Segment 2: c, ack(b), ack(c). Segment 2 has nothing live, but deleting it
    // while segment 1 exists would resurrect b.
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let q = queue(&store, "q");
    let big = [1u8; 1900];
    let (a, _) = store.enqueue(q, msg(&[], &big)).unwrap();
    let (b, commit) = store.enqueue(q, msg(&[], &big)).unwrap();
    commit.await.unwrap();
    let (c, commit) = store.enqueue(q, msg(&[], &big)).unwrap();
    commit.await.unwrap();
    assert_eq!((a.segment, b.segment, c.segment), (1, 1, 2));
    store.remove(q, b).unwrap().await.unwrap();
    store.remove(q, c).unwrap().await.unwrap();
    // Roll to segment 3 so segment 2 is no longer the active one.
    let (d, commit) = store.enqueue(q, msg(&[], &[2u8; 3000])).unwrap();
    commit.await.unwrap();
    assert_eq!(d.segment, 3);
    store.remove(q, d).unwrap().await.unwrap();
    assert_eq!(segment_files(&dir.0), vec![1, 2, 3]);
    store.close().await.unwrap();
    drop(store);
    let (store, recovered) = open_small(&dir.0, 4096);
    assert_eq!(recovered.queues[0].messages, vec![a]);
    // Acking a frees segment 1 (once a topology snapshot covers the queue's declare in it),
    // which releases segment 2.
    store.remove(q, a).unwrap().await.unwrap();
    store.wait_for_snapshot();
    assert_eq!(segment_files(&dir.0), vec![3]);
}

#[tokio::test]
async fn read_returns_the_message_and_close_rejects_appends() {
    let dir = TestDir::new();
    let (store, _) = open(&dir.0);
    let q = queue(&store, "q");
    let (position, commit) = store.enqueue(q, msg(b"props", b"body")).unwrap();
    commit.await.unwrap();
    let message = store.read(position).unwrap();
    assert_eq!(
        message,
        StoredMessage {
            queue: q,
            exchange: "amq.direct".into(),
            routing_key: "rk".into(),
            properties: Bytes::from_static(b"props"),
            body: Bytes::from_static(b"body"),
        }
    );
    let bogus = Position {
        len: position.len + 1,
        ..position
    };
    assert!(matches!(
        store.read(bogus),
        Err(StoreError::NoMessage { .. })
    ));
    let long = "k".repeat(256);
    let too_long = PersistentMessage {
        routing_key: &long,
        ..msg(&[], b"")
    };
    assert!(matches!(
        store.enqueue(q, too_long),
        Err(StoreError::NameTooLong)
    ));
    assert!(matches!(
        store.enqueue(QueueId(999), msg(&[], b"")),
        Err(StoreError::UnknownQueue(QueueId(999)))
    ));
    store.close().await.unwrap();
    assert!(matches!(
        store.enqueue(q, msg(&[], b"late")),
        Err(StoreError::Closed)
    ));
}

/// Random enqueues, removes, purges and reopens against a model of the queues: after every
/// reopen the store must hold exactly the model's messages, in order.
#[tokio::test]
async fn random_operations_match_a_model_across_reopens() {
    let dir = TestDir::new();
    let mut rng = StdRng::seed_from_u64(0x1e905);
    let (mut store, _) = open_small(&dir.0, 4096);
    let queues = [queue(&store, "a"), queue(&store, "b")];
    let mut model: BTreeMap<QueueId, Vec<(Position, Vec<u8>)>> =
        queues.iter().map(|&q| (q, Vec::new())).collect();
    let mut deleted = 0;
    for round in 0..3000u32 {
        let q = queues[rng.random_range(0..2)];
        match rng.random_range(0..100) {
            0..55 => {
                let body: Vec<u8> = (0..rng.random_range(0..600))
                    .map(|_| rng.random())
                    .collect();
                let (position, commit) =
                    store.enqueue(q, msg(&round.to_be_bytes(), &body)).unwrap();
                commit.await.unwrap();
                model.get_mut(&q).unwrap().push((position, body));
            }
            55..97 => {
                let messages = model.get_mut(&q).unwrap();
                if !messages.is_empty() {
                    // Mostly FIFO, as consumers ack, so that whole segments free up, but
                    // often sparing the oldest message, so that acks of its segment's other
                    // messages sit in segments that free up before it.
                    let index = match rng.random_range(0..10) {
                        0..6 => 1.min(messages.len() - 1),
                        6..9 => rng.random_range(0..messages.len()),
                        _ => 0,
                    };
                    let (position, _) = messages.remove(index);
                    store.remove(q, position).unwrap().await.unwrap();
                }
            }
            97 => {
                store.purge(q).unwrap().await.unwrap();
                model.get_mut(&q).unwrap().clear();
            }
            _ => {
                store.close().await.unwrap();
                deleted += store.stats().segments_deleted;
                store.close().await.unwrap();
                drop(store);
                let (reopened, recovered) = open_small(&dir.0, 4096);
                store = reopened;
                for queue in &recovered.queues {
                    let want = &model[&queue.id];
                    let want_positions: Vec<Position> = want.iter().map(|(p, _)| *p).collect();
                    assert_eq!(queue.messages, want_positions, "round {round}");
                    for (position, body) in want {
                        let got = store.read(*position).unwrap().body;
                        assert!(
                            got == body[..],
                            "round {round}: body at {position:?} differs"
                        );
                    }
                }
            }
        }
        let live: usize = model.values().map(Vec::len).sum();
        assert_eq!(store.stats().live_messages, live as u64, "round {round}");
    }
    deleted += store.stats().segments_deleted;
    println!(
        "model check: {deleted} segments deleted, now {:?}",
        store.stats()
    );
    assert!(deleted > 0, "the run must exercise compaction");
}

/// Not a test: prints the store's persistent-append throughput (1 KiB bodies, 128 publishers
/// each waiting for its commit before the next append, fsync before every commit). Run with
/// `cargo test -p lepus-broker --release --lib store::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn throughput() {
    let dir = TestDir::new();
    let (store, _) = open(&dir.0);
    let store = std::sync::Arc::new(store);
    let q = queue(&store, "q");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let body = [0x5a; 1024];
            for _ in 0..400 {
                let (position, commit) = store.enqueue(q, msg(&[0x10, 0, 2], &body)).unwrap();
                commit.await.unwrap();
                let _not_awaited = store.remove(q, position).unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    println!(
        "{} enqueues in {elapsed:?}: {:.0} msg/s, {} fsyncs ({:.1} records per fsync), \
         {} segments deleted",
        128 * 400,
        f64::from(128 * 400) / elapsed.as_secs_f64(),
        stats.fsyncs,
        stats.records as f64 / stats.fsyncs as f64,
        stats.segments_deleted,
    );
}

#[tokio::test]
async fn a_failed_write_fails_its_waiters_and_every_later_append() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let q = queue(&store, "q");
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.enqueue_signal(q, msg(&[], &[1; 3000]), tx).unwrap();
    rx.await.expect("a committed signal fires");

    // Pull the directory away: the next segment cannot be created.
    std::fs::remove_dir_all(dir.0.join("segments")).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.enqueue_signal(q, msg(&[], &[2; 3000]), tx).unwrap();
    assert!(rx.await.is_err(), "a failed write drops the signal unfired");
    assert!(matches!(
        store.enqueue(q, msg(&[], b"later")),
        Err(StoreError::WriterFailed(_))
    ));
    assert!(matches!(
        store.close().await,
        Err(StoreError::WriterFailed(_))
    ));
}

#[test]
fn read_many_reads_adjacent_records_in_runs_and_waits_for_unwritten_ones() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let store = Arc::new(store);
    let q = queue(&store, "paged");
    // Hold the writer at its gate: these records are appended but not yet written.
    let gate = store.shared.gate.lock().unwrap();
    let positions: Vec<Position> = (0..40u8)
        .map(|i| store.enqueue(q, msg(b"p", &[i; 300])).unwrap().0)
        .collect();
    assert!(
        positions.iter().any(|p| p.segment != positions[0].segment),
        "the records span segments (runs must split there)"
    );
    let reader = {
        let store = store.clone();
        let wanted: Vec<Position> = positions.iter().step_by(3).copied().collect();
        std::thread::spawn(move || store.read_many(&wanted))
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!reader.is_finished(), "read before the record was written");
    drop(gate);
    let read = reader.join().unwrap();
    let bodies: Vec<u8> = read.into_iter().map(|r| r.unwrap().body[0]).collect();
    assert_eq!(bodies, (0..40u8).step_by(3).collect::<Vec<_>>());
    // All of them, adjacent: same answers as one by one.
    let all = store.read_many(&positions);
    for (i, (one, position)) in all.into_iter().zip(&positions).enumerate() {
        let one = one.unwrap();
        assert_eq!(one.body.as_ref(), &[i as u8; 300][..]);
        assert_eq!(one, store.read(*position).unwrap());
    }
    // A position past everything appended fails at once instead of waiting.
    let last = positions[positions.len() - 1];
    let beyond = Position {
        segment: last.segment,
        offset: last.offset + last.len,
        len: last.len,
    };
    assert!(matches!(
        store.read_many(&[beyond])[0],
        Err(StoreError::NoMessage { .. })
    ));
}

fn exchange_def(name: &str) -> ExchangeDef {
    ExchangeDef {
        vhost: "/".into(),
        name: name.into(),
        kind: "topic".into(),
        auto_delete: false,
        internal: false,
        arguments: Bytes::from_static(b"\x00\x00\x00\x00"),
    }
}

fn binding_def(source: &str, to_exchange: bool, destination: &str, key: &str) -> BindingDef {
    BindingDef {
        vhost: "/".into(),
        source: source.into(),
        destination_kind: if to_exchange {
            BindingDestination::Exchange
        } else {
            BindingDestination::Queue
        },
        destination: destination.into(),
        routing_key: key.into(),
        arguments: Bytes::new(),
    }
}

/// A log of every kind of topology record, mixed with messages, cut at every byte: recovery
/// keeps exactly the topology (and the messages) of the whole records before the cut, and the
/// log keeps working after it.
#[tokio::test]
async fn topology_records_recover_exactly_at_every_cut() {
    let source = TestDir::new();
    let (store, _) = open(&source.0);
    // After each whole record: the log's end, the topology, and queue a's messages.
    let mut points: Vec<(u64, Definitions, Vec<&'static [u8]>)> =
        vec![(SEGMENT_HEADER_LEN, store.definitions(), Vec::new())];
    let mut a = None;
    let mut bodies_of_a: Vec<&'static [u8]> = Vec::new();
    for step in 0..13 {
        let commit = match step {
            0 => store.declare_exchange(exchange_def("x")).unwrap(),
            1 => {
                let (id, commit) = store
                    .declare_queue("/", "a", false, Bytes::from_static(b"args"))
                    .unwrap();
                a = Some(id);
                commit
            }
            2 => store.bind(binding_def("x", false, "a", "k.a")).unwrap(),
            3 | 9 => {
                let body: &'static [u8] = if step == 3 { b"m1" } else { b"m2" };
                bodies_of_a.push(body);
                store.enqueue(a.unwrap(), msg(&[], body)).unwrap().1
            }
            4 => store.declare_queue("/", "b", true, Bytes::new()).unwrap().1,
            5 => store.bind(binding_def("x", false, "b", "k.b")).unwrap(),
            6 => store.declare_exchange(exchange_def("y")).unwrap(),
            7 => store.bind(binding_def("x", true, "y", "#")).unwrap(),
            8 => store.unbind(&binding_def("x", false, "a", "k.a")).unwrap(),
            10 => {
                let b = store.definitions().queue("/", "b").unwrap().id;
                store.delete_queue(b).unwrap()
            }
            11 => store.delete_exchange("/", "y").unwrap(),
            _ => {
                store
                    .declare_queue("/", "a", true, Bytes::from_static(b"other args"))
                    .unwrap()
                    .1
            }
        };
        commit.await.unwrap();
        points.push((
            boundaries_end(&store),
            store.definitions(),
            bodies_of_a.clone(),
        ));
    }
    let last = points.last().unwrap().1.clone();
    assert_eq!(last.exchanges.len(), 1, "{last:?}");
    assert_eq!(last.queues.len(), 1, "{last:?}");
    assert!(last.bindings.is_empty(), "{last:?}");
    store.close().await.unwrap();
    drop(store);
    let a = a.unwrap();
    let segment = std::fs::read(segment_path(&source.0, 1)).unwrap();
    assert_eq!(points.last().unwrap().0, segment.len() as u64);

    for cut in 0..=segment.len() {
        let (dir, store, recovered) = open_cut(&segment, cut);
        let whole = points
            .iter()
            .rposition(|(end, _, _)| *end <= cut as u64)
            .unwrap_or(0);
        let (_, want_topology, want_bodies) = &points[whole];
        assert_eq!(&recovered.definitions, want_topology, "cut at byte {cut}");
        let got: Vec<Bytes> = match recovered.queues.iter().any(|q| q.id == a) {
            true => bodies(&store, &recovered, a),
            false => Vec::new(),
        };
        let want: Vec<Bytes> = want_bodies.iter().map(|b| Bytes::from_static(b)).collect();
        assert_eq!(got, want, "cut at byte {cut}");
        // The log goes on: one more change survives a reopen.
        store
            .declare_exchange(exchange_def("after"))
            .unwrap()
            .await
            .unwrap();
        let mut want_after = store.definitions();
        store.close().await.unwrap();
        drop(store);
        let (_, recovered) = open(&dir.0);
        want_after.next_queue_id = recovered.definitions.next_queue_id;
        assert_eq!(
            recovered.definitions, want_after,
            "reopen after cut at {cut}"
        );
    }
}

/// Past 1,024 topology records a snapshot folds them into `definitions`; a reopen reads the
/// snapshot and replays only the records after it.
#[tokio::test]
async fn a_snapshot_folds_the_topology_records_and_a_reopen_replays_the_rest() {
    let dir = TestDir::new();
    let (store, _) = open(&dir.0);
    store
        .declare_exchange(exchange_def("x"))
        .unwrap()
        .await
        .unwrap();
    let (_, commit) = store.declare_queue("/", "q", false, Bytes::new()).unwrap();
    commit.await.unwrap();
    for n in 0..1100 {
        store
            .bind(binding_def("x", false, "q", &format!("k.{n}")))
            .unwrap()
            .await
            .unwrap();
    }
    store.wait_for_snapshot();
    let snapshot = std::fs::read(dir.0.join("definitions")).expect("a snapshot was written");
    let (in_snapshot, covers) = Definitions::decode(&snapshot).unwrap();
    assert!(
        in_snapshot.bindings.len() >= 1000,
        "{}",
        in_snapshot.bindings.len()
    );
    assert!(covers > (1, SEGMENT_HEADER_LEN as u32));
    // After the snapshot: more changes, which only the log holds.
    for n in 0..50 {
        store
            .unbind(&binding_def("x", false, "q", &format!("k.{n}")))
            .unwrap()
            .await
            .unwrap();
    }
    let want = store.definitions();
    assert_eq!(want.bindings.len(), 1050);
    store.close().await.unwrap();
    drop(store);
    let (_, recovered) = open(&dir.0);
    assert_eq!(recovered.definitions, want);
}

/// A snapshot covers the records before its place in the log: they are not replayed on top
/// of it. Here a bind sits in segment 1 (kept for a live message) and its unbind in segment 2,
/// which the snapshot lets compaction delete: replaying the bind would bring it back.
#[tokio::test]
async fn records_a_snapshot_covers_are_not_replayed() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    store
        .declare_exchange(exchange_def("x"))
        .unwrap()
        .await
        .unwrap();
    let q = queue(&store, "q");
    let binding = binding_def("x", false, "q", "k");
    store.bind(binding.clone()).unwrap().await.unwrap();
    let (kept, commit) = store.enqueue(q, msg(&[], &[1; 1000])).unwrap();
    commit.await.unwrap();
    // Segment 2: the unbind, and a message acked at once.
    let (gone, commit) = store.enqueue(q, msg(&[], &[2; 3000])).unwrap();
    commit.await.unwrap();
    assert_eq!((kept.segment, gone.segment), (1, 2));
    store.unbind(&binding).unwrap().await.unwrap();
    store.remove(q, gone).unwrap().await.unwrap();
    // Segment 3 (active): segment 2 is free but for its unbind, so a snapshot is taken and
    // segment 2 deleted.
    let (rolled, commit) = store.enqueue(q, msg(&[], &[3; 3000])).unwrap();
    commit.await.unwrap();
    assert_eq!(rolled.segment, 3);
    store.remove(q, rolled).unwrap().await.unwrap();
    store.wait_for_snapshot();
    assert_eq!(segment_files(&dir.0), vec![1, 3]);
    store.close().await.unwrap();
    drop(store);
    let (store, recovered) = open_small(&dir.0, 4096);
    assert!(
        recovered.definitions.bindings.is_empty(),
        "the unbind was undone: {:?}",
        recovered.definitions.bindings
    );
    assert_eq!(
        bodies(&store, &recovered, q),
        vec![Bytes::from(vec![1; 1000])]
    );
}

/// Compaction deletes a segment only once the records that freed it are committed: were it
/// deleted first, a crash would lose both (for a dead-lettered message, whose new copy is
/// appended just before its removal, that is a loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Holding the (std) gates across awaits is the point: they stop the writer thread, not a task.
#[allow(clippy::await_holding_lock)]
async fn a_segment_is_not_deleted_before_the_removal_that_freed_it_is_committed() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let q = queue(&store, "q");
    // Segment 1: the declare and two fillers; segment 2: m alone; segment 3: the rest.
    for _ in 0..2 {
        store
            .enqueue(q, msg(&[], &[0; 1900]))
            .unwrap()
            .1
            .await
            .unwrap();
    }
    let (m, commit) = store.enqueue(q, msg(&[], &[1; 1900])).unwrap();
    commit.await.unwrap();
    let (big, commit) = store.enqueue(q, msg(&[], &[2; 3000])).unwrap();
    commit.await.unwrap();
    assert_eq!((m.segment, big.segment), (2, 3));

    // The writer writes and syncs x, then stops before its compaction.
    let compaction = store.shared.compaction_gate.lock().unwrap();
    let (x, x_commit) = store.enqueue(q, msg(&[], b"x")).unwrap();
    while store.shared.lock().written < (x.segment, x.offset + x.len) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Meanwhile m is removed: the ledger frees segment 2, the removal is not written yet.
    let batches = store.shared.gate.lock().unwrap();
    let removed = store.remove(q, m).unwrap();
    drop(compaction);
    x_commit.await.unwrap();
    assert!(
        segment_files(&dir.0).contains(&2),
        "segment 2 deleted before the removal that freed it was written"
    );
    drop(batches);
    removed.await.unwrap();
    assert!(!segment_files(&dir.0).contains(&2));
}

#[tokio::test]
async fn low_on_space_the_store_refuses_what_grows_the_log_and_takes_what_frees_it() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 64 * 1024);
    assert!(
        dir.0.join("reserve").exists(),
        "the reserve is written at open"
    );
    let jobs = queue(&store, "jobs");
    let (kept, commit) = store.enqueue(jobs, msg(b"p", b"kept")).unwrap();
    commit.await.unwrap();
    // As the writer leaves it after a write found the disk full.
    assert!(store.shared.reserve.release());
    store.shared.lock().low_space = true;

    assert!(matches!(
        store.enqueue(jobs, msg(b"p", b"refused")),
        Err(StoreError::NoSpace)
    ));
    assert!(matches!(
        store.declare_queue("/", "new", false, Bytes::new()),
        Err(StoreError::NoSpace)
    ));
    // A dead-lettered message is taken: its source's remove follows, refusing it would lose it.
    let (moved_tx, moved_rx) = tokio::sync::oneshot::channel();
    store
        .enqueue_moved_signal(jobs, msg(b"p", b"dead-lettered"), moved_tx)
        .unwrap();
    moved_rx.await.unwrap();
    store.remove(jobs, kept).unwrap().await.unwrap();
    store.purge(jobs).unwrap().await.unwrap();

    // Space is back (a temp dir has far more than twice the reserve): compaction writes the
    // reserve again and the store takes everything again.
    store.shared.refill_reserve();
    assert!(dir.0.join("reserve").exists());
    let (_, commit) = store.enqueue(jobs, msg(b"p", b"again")).unwrap();
    commit.await.unwrap();
    store.close().await.unwrap();
}

/// Copies data directory `from` into the empty directory `to`, as a process crash leaves it
/// (the page cache's view: written or not, fsynced or not), without its `LOCK`.
fn copy_data_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_data_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Length of segment `number`'s file.
fn segment_len(dir: &Path, number: u32) -> u64 {
    std::fs::metadata(segment_path(dir, number)).unwrap().len()
}

#[tokio::test]
async fn a_segment_open_out_of_descriptors_refuses_its_batch_and_the_writer_goes_on() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let q = queue(&store, "q");
    let (first, commit) = store.enqueue(q, msg(b"p", &[1; 3000])).unwrap();
    commit.await.unwrap();

    // The next record needs a new segment, and the process is out of descriptors.
    store.shared.fail_opens.store(1, Ordering::Relaxed);
    let (refused, commit) = store.enqueue(q, msg(b"p", &[2; 3000])).unwrap();
    assert!(
        matches!(commit.await, Err(StoreError::WriteRefused(_))),
        "the batch that needed the segment is refused"
    );
    assert!(matches!(
        store.read(refused),
        Err(StoreError::NoMessage { .. })
    ));
    // Descriptors are back: the writer is alive and the next record is committed, in a new
    // segment (the refused record's position is never reused).
    let (third, commit) = store.enqueue(q, msg(b"p", &[3; 3000])).unwrap();
    commit.await.unwrap();
    assert!(third.segment > refused.segment);
    assert_eq!(store.read(third).unwrap().body.as_ref(), &[3; 3000][..]);
    // A remove naming the refused record (the broker still holds it) is accepted.
    store.remove(q, refused).unwrap().await.unwrap();
    assert!(!segment_files(&dir.0).contains(&refused.segment));
    store.close().await.unwrap();

    let (store, recovered) = open_small(&dir.0, 4096);
    assert_eq!(
        bodies(&store, &recovered, q),
        vec![Bytes::from(vec![1; 3000]), Bytes::from(vec![3; 3000])]
    );
    assert_eq!(store.read(first).unwrap().body.as_ref(), &[1; 3000][..]);
    store.close().await.unwrap();
}

// Holding the (std) gate across awaits is the point: it keeps the writer thread, not a task,
// from taking a batch; the awaited tasks never touch the gate.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_batch_the_disk_cannot_hold_is_cut_off_and_refused_while_removes_go_on() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 64 * 1024);
    let q = queue(&store, "q");
    let mut kept = Vec::new();
    for i in 0..3u8 {
        let (position, commit) = store.enqueue(q, msg(b"p", &[i; 1000])).unwrap();
        commit.await.unwrap();
        kept.push(position);
    }
    let segment = kept[0].segment;
    let end = segment_len(&dir.0, segment);

    // One batch of 20 records; its write fails, and again once the reserve is given back (the
    // batch is larger than what that freed): half of it reached the file each time.
    store.shared.fail_writes.store(2, Ordering::Relaxed);
    let gate = store.shared.gate.lock().unwrap();
    let commits: Vec<Commit> = (0..20u8)
        .map(|i| store.enqueue(q, msg(b"p", &[100 + i; 1000])).unwrap().1)
        .collect();
    drop(gate);
    for commit in commits {
        assert!(matches!(commit.await, Err(StoreError::WriteRefused(_))));
    }
    assert_eq!(
        segment_len(&dir.0, segment),
        end,
        "the batch's bytes are cut off: the segment ends where the batch began"
    );
    assert!(store.shared.lock().low_space, "still low on space");
    assert!(!dir.0.join("reserve").exists());
    // A crash now: recovery finds the committed records and a clean end, nothing torn.
    let crashed = TestDir::new();
    copy_data_dir(&dir.0, &crashed.0);
    let (copy, recovered) = open_small(&crashed.0, 64 * 1024);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(
        bodies(&copy, &recovered, q),
        (0..3u8)
            .map(|i| Bytes::from(vec![i; 1000]))
            .collect::<Vec<_>>()
    );
    copy.close().await.unwrap();
    assert!(matches!(
        store.enqueue(q, msg(b"p", b"refused")),
        Err(StoreError::NoSpace)
    ));

    // The next batch starts a new segment; its write fails too (no reserve left to give):
    // the segment it created is deleted.
    store.shared.fail_writes.store(1, Ordering::Relaxed);
    let refused_remove = store.remove(q, kept[0]).unwrap();
    assert!(matches!(
        refused_remove.await,
        Err(StoreError::WriteRefused(_))
    ));
    assert_eq!(segment_files(&dir.0), vec![segment]);
    // Removes go on (consumers free space): the next one is committed.
    store.remove(q, kept[1]).unwrap().await.unwrap();

    // Space is back: the reserve is written again and publishes are taken again.
    store.shared.refill_reserve();
    let (again, commit) = store.enqueue(q, msg(b"p", b"again")).unwrap();
    commit.await.unwrap();
    store.close().await.unwrap();

    // The log is a clean prefix: the committed records, and nothing refused.
    let (store, recovered) = open_small(&dir.0, 64 * 1024);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(
        bodies(&store, &recovered, q),
        vec![
            Bytes::from(vec![0; 1000]),
            Bytes::from(vec![2; 1000]),
            Bytes::from_static(b"again")
        ],
        "message 0's remove was refused (a redelivery), message 1's committed"
    );
    assert_eq!(store.read(again).unwrap().body.as_ref(), b"again");
    store.close().await.unwrap();
}

/// Dead-lettering appends the copy to its new queue, then (without waiting for it) the remove
/// of the original. A refused copy must not be followed by a committed remove: the message
/// would be in neither queue after a restart.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_dead_letter_is_never_removed_from_its_queue_when_its_copy_is_refused() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 64 * 1024);
    let source = queue(&store, "source");
    let target = queue(&store, "target");
    let mut originals = Vec::new();
    for body in [&b"refused copy"[..], b"refused together", b"moved"] {
        let (position, commit) = store.enqueue(source, msg(b"p", body)).unwrap();
        commit.await.unwrap();
        originals.push(position);
    }

    // 1. The batch holding the copy is refused (its write fails, and again once the reserve
    // is given back) before the remove is asked for: the remove is withheld.
    let refusals = store.refusals();
    store.shared.fail_writes.store(2, Ordering::Relaxed);
    let (moved_tx, moved_rx) = tokio::sync::oneshot::channel();
    store
        .enqueue_moved_signal(target, msg(b"p", b"refused copy"), moved_tx)
        .unwrap();
    assert!(moved_rx.await.is_err(), "the copy's batch is refused");
    assert_eq!(store.refusals(), refusals + 1);
    assert!(matches!(
        store.remove_moved(source, originals[0], refusals),
        Err(StoreError::MoveUnconfirmed)
    ));
    // The reserve is spent now: in 2, one failed write refuses its batch.
    assert!(
        store.shared.lock().low_space,
        "the refusal left the store low on space"
    );

    // 2. The remove is appended before the refusal, in the same batch as the copy: the
    // refusal takes both.
    let refusals = store.refusals();
    store.shared.fail_writes.store(1, Ordering::Relaxed);
    let gate = store.shared.gate.lock().unwrap();
    let (moved_tx, moved_rx) = tokio::sync::oneshot::channel();
    store
        .enqueue_moved_signal(target, msg(b"p", b"refused together"), moved_tx)
        .unwrap();
    let remove = store.remove_moved(source, originals[1], refusals).unwrap();
    drop(gate);
    assert!(moved_rx.await.is_err());
    assert!(matches!(remove.await, Err(StoreError::WriteRefused(_))));

    // 3. No refusal in between: the copy and the remove both commit.
    let refusals = store.refusals();
    let (moved_tx, moved_rx) = tokio::sync::oneshot::channel();
    store
        .enqueue_moved_signal(target, msg(b"p", b"moved"), moved_tx)
        .unwrap();
    store
        .remove_moved(source, originals[2], refusals)
        .unwrap()
        .await
        .unwrap();
    moved_rx.await.unwrap();
    store.close().await.unwrap();

    let (store, recovered) = open_small(&dir.0, 64 * 1024);
    assert_eq!(
        bodies(&store, &recovered, source),
        vec![
            Bytes::from_static(b"refused copy"),
            Bytes::from_static(b"refused together")
        ],
        "the letters whose copies were refused stay where they were"
    );
    assert_eq!(
        bodies(&store, &recovered, target),
        vec![Bytes::from_static(b"moved")]
    );
    store.close().await.unwrap();
}

/// A batch that fills the current segment and crosses into a new one, and fails there (out
/// of descriptors opening the new segment): the part it wrote in the segment before is cut
/// off too, so none of its refused records comes back on reopen.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_refused_batch_that_crossed_segments_leaves_nothing_behind() {
    let dir = TestDir::new();
    let (store, _) = open_small(&dir.0, 4096);
    let q = queue(&store, "q");
    let (_, commit) = store.enqueue(q, msg(b"p", &[1; 1000])).unwrap();
    commit.await.unwrap();
    let segment = store.shared.lock().append_point().0;
    let end = segment_len(&dir.0, segment);

    // One batch: two records still fit the segment, the third needs the next one, which the
    // writer cannot open.
    store.shared.fail_opens.store(1, Ordering::Relaxed);
    let gate = store.shared.gate.lock().unwrap();
    let appended: Vec<(Position, Commit)> = (2..5u8)
        .map(|i| store.enqueue(q, msg(b"p", &[i; 1000])).unwrap())
        .collect();
    assert_eq!(appended[1].0.segment, segment);
    assert!(
        appended[2].0.segment > segment,
        "the batch crosses segments"
    );
    drop(gate);
    for (_, commit) in appended {
        assert!(matches!(commit.await, Err(StoreError::WriteRefused(_))));
    }
    assert_eq!(
        segment_len(&dir.0, segment),
        end,
        "the part written in the first segment is cut off"
    );
    let (_, commit) = store.enqueue(q, msg(b"p", &[9; 1000])).unwrap();
    commit.await.unwrap();
    store.close().await.unwrap();

    let (store, recovered) = open_small(&dir.0, 4096);
    assert_eq!(
        bodies(&store, &recovered, q),
        vec![Bytes::from(vec![1; 1000]), Bytes::from(vec![9; 1000])],
        "no refused record comes back"
    );
    store.close().await.unwrap();
}
