//! The durable store when the process runs out of file descriptors (EMFILE), as when the
//! application embedding the broker leaks files: the store cannot open its next segment. The
//! publishes whose batch needed it are refused (nacked, never confirmed), the broker keeps
//! serving, and once descriptors are free again publishes (and durable declares) are confirmed
//! again without a restart; a restart finds every confirmed message.
//!
//! A test binary of its own: it takes every free descriptor of the process while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::path::Path;

use lapin::types::FieldTable;
use lepus_broker::BrokerHandle;

use common::persistent::{
    assert_covers, confirmed_queue, drain, durable, publish_until_refused, start_durable, ANSWER,
};

/// A broker on `data_dir` with 64 KiB segments, so that a few dozen 1 KiB messages need a new
/// segment file.
async fn start(data_dir: &Path) -> BrokerHandle {
    start_durable(data_dir, 64 << 10).await
}

/// Opens `/dev/null` until the process is out of descriptors (EMFILE); dropping the files
/// gives them back. Bounded by the soft limit (20,000 here), which it leaves as it is.
fn take_every_descriptor() -> Vec<File> {
    let mut files = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(24), "EMFILE expected: {err}");
                return files;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_publishes_are_refused_then_confirmed_again_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let broker = start(&data_dir).await;
    let url = broker.amqp_url();
    let (conn, ch, before) = confirmed_queue(&url, "jobs", 100).await;

    // 600 KiB: about ten new segments, none of which can be opened.
    let taken = take_every_descriptor();
    let starved = publish_until_refused(&ch, "jobs", 100..700).await;
    drop(taken);
    eprintln!("out of descriptors: {starved}");
    assert!(
        !starved.nacked.is_empty(),
        "no publish refused without descriptors: {starved:?}"
    );
    assert!(
        starved.failed.is_empty(),
        "a refused write is a nack: {starved:?}"
    );

    // Descriptors are back: publishes are confirmed again, and a durable declare works.
    let again = publish_until_refused(&ch, "jobs", 1000..1300).await;
    eprintln!("descriptors back: {again}");
    assert_eq!(again.acked.len(), 300, "{again:?}");
    let declared = tokio::time::timeout(
        ANSWER,
        ch.queue_declare("later".into(), durable(), FieldTable::default()),
    )
    .await
    .expect("queue.declare answered");
    assert!(declared.is_ok(), "durable declare after: {declared:?}");
    let _ = conn.close(200, "bye".into()).await;
    tokio::time::timeout(ANSWER, broker.shutdown())
        .await
        .expect("the broker shuts down");

    let broker = start(&data_dir).await;
    let recovered = drain(&broker.amqp_url(), "jobs", true).await;
    let confirmed: std::collections::BTreeSet<u64> = before
        .acked
        .iter()
        .chain(&starved.acked)
        .chain(&again.acked)
        .copied()
        .collect();
    assert_covers(&recovered, &confirmed, "recovered after a restart");
    tokio::time::timeout(ANSWER, broker.shutdown())
        .await
        .expect("the broker shuts down");
}
