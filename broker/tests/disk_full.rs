//! The broker and a full disk.
//!
//! With the disk alarm off (`disk_free_limit(0)`), its data directory on a 16 MiB tmpfs,
//! publishers with confirms fill it with 1 KiB persistent messages until the store cannot
//! write. What must hold, whatever the disk does: every publish is answered (ack or nack, or a
//! channel error; never a hang); no acked message is lost, neither while the broker runs nor
//! after a restart (duplicates allowed); a durable `queue.declare` the store could not write is
//! refused; the broker keeps serving (a consumer on another connection drains the queue); once
//! drained, publishes are confirmed again. These tests are also the "limit 0 never blocks"
//! tests: the disk is filled to its last byte and no publisher is ever blocked.
//!
//! With the disk alarm on: a limit above the free space blocks publishers (`connection.blocked`
//! "low on disk") while consumers drain, and the management API and `/metrics` say so; the
//! alarm clears when space returns.
//!
//! The tmpfs tests need root (to mount it); they skip (and say so) elsewhere unless
//! `LEPUS_REQUIRE_TMPFS` is set (`.ci/run` sets it, so CI cannot skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{Channel, Connection, Event};
use lepus_broker::{Broker, BrokerHandle};

use common::amqp::connect_url;
use common::http::Api;
use common::persistent::{
    assert_covers, confirm_channel, confirmed_queue, drain, durable, publish_persistent,
    publish_sized, publish_until_refused, start_durable, ANSWER, WINDOW,
};
use common::prometheus::parse_prometheus;

/// Size of the tmpfs the data directory lives on.
const DISK: &str = "16m";
/// More than fits on the disk: the test stops publishing once the store refuses.
const MAX_MESSAGES: u64 = 40_000;

/// A tmpfs mounted on a fresh temporary directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes (`mount -o size=`), or `None` (after saying why) when
    /// mounting is not possible here and `LEPUS_REQUIRE_TMPFS` is not set.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(status) if status.success() => Some(Self { dir }),
            other => {
                assert!(
                    std::env::var_os("LEPUS_REQUIRE_TMPFS").is_none(),
                    "LEPUS_REQUIRE_TMPFS is set but a tmpfs cannot be mounted: {other:?}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here ({other:?}); needs root");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Free bytes on the file system holding `path`, as `df` would say.
fn free_bytes(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_bavail * stat.f_frsize
}

async fn start(data_dir: &Path) -> BrokerHandle {
    // Small segments, so that draining frees whole segments (compaction) on the small disk.
    start_durable(data_dir, 1 << 20).await
}

/// Declares durable queue `queue` on a channel of its own: whether the broker said `-ok`.
async fn declare_durable(conn: &Connection, queue: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let declared = tokio::time::timeout(
        ANSWER,
        ch.queue_declare(queue.into(), durable(), FieldTable::default()),
    )
    .await
    .expect("queue.declare answered");
    declared.is_ok()
}

/// Whether durable queue `queue` exists (passive declare).
async fn exists(conn: &Connection, queue: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let options = QueueDeclareOptions {
        passive: true,
        ..durable()
    };
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await
        .is_ok()
}

/// The disk fills, a consumer drains it (acking) while the same broker runs, and publishing
/// works again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drained_in_place_takes_publishes_again() {
    full_disk(false).await;
}

/// The disk fills, the broker restarts on the full disk, a consumer drains it (acking), and
/// publishing works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drained_after_a_restart_takes_publishes_again() {
    full_disk(true).await;
}

/// Fills the disk with confirmed publishes, checks the broker still serves, drains the queue
/// (after a restart when `restart_full`), checks publishes are confirmed again, and that
/// everything confirmed survives a restart.
async fn full_disk(restart_full: bool) {
    let Some(disk) = Tmpfs::mount(DISK) else {
        return;
    };
    let data_dir: PathBuf = disk.path().join("data");
    let mut broker = start(&data_dir).await;
    let mut url = broker.amqp_url();
    let conn = connect_url(&url).await;
    let ch = confirm_channel(&conn).await;
    ch.queue_declare("fill".into(), durable(), FieldTable::default())
        .await
        .unwrap();

    let filled = publish_until_refused(&ch, "fill", 0..MAX_MESSAGES).await;
    let published = filled.acked.len() + filled.nacked.len() + filled.failed.len();
    eprintln!(
        "full disk: {} acked, {} nacked, {} failed of {published} published; first refused {:?}; \
         {} bytes free",
        filled.acked.len(),
        filled.nacked.len(),
        filled.failed.len(),
        filled.nacked.iter().chain(&filled.failed).min(),
        free_bytes(disk.path()),
    );
    assert!(
        !filled.nacked.is_empty() || !filled.failed.is_empty(),
        "{MAX_MESSAGES} KiB-messages fit on a {DISK} disk?"
    );
    assert!(
        filled.acked.len() > 1000,
        "the disk took only {} messages",
        filled.acked.len()
    );

    assert!(!conn.status().blocked(), "a limit of 0 never blocks");
    // The broker still serves: a new connection, and a durable declare that it must either
    // persist or refuse.
    let other = connect_url(&url).await;
    let declared_when_full = declare_durable(&other, "declared-when-full").await;
    eprintln!("durable queue.declare on the full disk: ok = {declared_when_full}");

    // A consumer on another connection is served every confirmed message (not acked: they
    // go back to the queue when it closes).
    let delivered = drain(&url, "fill", false).await;
    assert_covers(&delivered, &filled.acked, "delivered on the full disk");
    let _ = conn.close(200, "bye".into()).await;
    let _ = other.close(200, "bye".into()).await;

    if restart_full {
        broker.shutdown().await;
        broker = start(&data_dir).await;
        url = broker.amqp_url();
    }
    // Consuming them (acked) frees their space.
    let drained = drain(&url, "fill", true).await;
    assert_covers(&drained, &filled.acked, "drained");
    eprintln!(
        "drained {} messages (restarted first: {restart_full}); {} bytes free after",
        drained.len(),
        free_bytes(disk.path())
    );

    // Space freed: new publishes are confirmed again, and survive a restart.
    let conn = connect_url(&url).await;
    let ch = confirm_channel(&conn).await;
    let again = publish_until_refused(&ch, "fill", MAX_MESSAGES..MAX_MESSAGES + 100).await;
    eprintln!("after the drain: {again}");
    assert_eq!(
        again.acked.len(),
        100,
        "publishes after the drain: {again:?}"
    );
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;

    let broker = start(&data_dir).await;
    let conn = connect_url(&broker.amqp_url()).await;
    if declared_when_full {
        assert!(
            exists(&conn, "declared-when-full").await,
            "queue.declare-ok on the full disk, but the queue is gone after a restart"
        );
    }
    let recovered = drain(&broker.amqp_url(), "fill", true).await;
    assert_covers(&recovered, &again.acked, "recovered after a restart");
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
}

/// Fills the file system holding `dir` with a file, as another process would, leaving about
/// `left` bytes free; returns the file's path (deleting it gives the space back).
fn take_space(dir: &Path, left: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![1u8; 64 << 10];
    while matches!(file.write(&chunk), Ok(n) if n > 0) {}
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(left)).unwrap();
    path
}

/// A batch larger than what the space reserve frees: one 600 KiB message when 64 KiB are free
/// and the reserve is 256 KiB. Its write fails even after the reserve is given back: it is cut
/// off and refused (never confirmed); the broker stays low on space, serving the consumer
/// whose acks free space, and takes publishes (that large one too) again once space returns;
/// a restart finds every confirmed message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_reserve_is_refused_and_publishes_resume_when_space_returns() {
    let Some(disk) = Tmpfs::mount(DISK) else {
        return;
    };
    let data_dir = disk.path().join("data");
    let broker = start(&data_dir).await;
    let url = broker.amqp_url();
    let (conn, ch, before) = confirmed_queue(&url, "big", 100).await;

    let ballast = take_space(disk.path(), 64 << 10);
    let large = 600 << 10;
    let confirm = publish_sized(&ch, "big", 100, large).await.unwrap();
    let answer = tokio::time::timeout(ANSWER, confirm)
        .await
        .expect("an answer for the large message");
    eprintln!(
        "large message on a full disk: {answer:?}; {} bytes free",
        free_bytes(disk.path())
    );
    assert!(
        !matches!(answer, Ok(Confirmation::Ack(_))),
        "a message the disk cannot hold was confirmed"
    );
    // Low on space: publishes are refused, but answered.
    let low = publish_until_refused(&ch, "big", 101..101 + WINDOW).await;
    assert!(low.acked.is_empty(), "low on space, yet confirmed: {low:?}");

    // Space returns; a consumer drains the queue (its acks are written, compaction refills
    // the reserve).
    std::fs::remove_file(&ballast).unwrap();
    let drained = drain(&url, "big", true).await;
    assert_covers(&drained, &before.acked, "drained");
    let again = publish_until_refused(&ch, "big", 1000..1100).await;
    assert_eq!(
        again.acked.len(),
        100,
        "publishes once space is back: {again:?}"
    );
    let confirm = publish_sized(&ch, "big", 2000, large).await.unwrap();
    let answer = tokio::time::timeout(ANSWER, confirm).await;
    assert!(
        matches!(answer, Ok(Ok(Confirmation::Ack(_)))),
        "the large message once space is back: {answer:?}"
    );
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;

    let broker = start(&data_dir).await;
    let recovered = drain(&broker.amqp_url(), "big", true).await;
    let mut confirmed = again.acked.clone();
    confirmed.insert(2000);
    assert_covers(&recovered, &confirmed, "recovered after a restart");
    broker.shutdown().await;
}

/// A broker on `data_dir` with the given disk free limit and its management API.
async fn start_with_limit(data_dir: &Path, limit: u64) -> (BrokerHandle, Api) {
    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .management_listen("127.0.0.1:0")
        .data_dir(data_dir)
        // Small segments, so that the store's space reserve (a quarter segment) fits the
        // small disk.
        .segment_size(1 << 20)
        .disk_free_limit(limit)
        .start()
        .await
        .expect("the broker starts");
    let api = Api::new(
        &format!("http://{}", broker.management_addr().unwrap()),
        "guest",
        "guest",
    );
    (broker, api)
}

/// The next `connection.blocked` (its reason) or `connection.unblocked` (`None`) lapin reports
/// on `events`, within ten seconds.
async fn next_blocking_event(events: &mut (impl Stream<Item = Event> + Unpin)) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await.expect("connection events") {
                Event::ConnectionBlocked(reason) => break Some(reason),
                Event::ConnectionUnblocked => break None,
                _ => {}
            }
        }
    })
    .await
    .expect("connection.blocked or connection.unblocked within 10 s")
}

/// Publishes one persistent message to `queue` on `ch` (a confirm channel) in a task: a
/// blocked connection holds it back, so the caller awaits the task when it expects the confirm.
fn publish_one(ch: &Channel, queue: &'static str, id: u64) -> tokio::task::JoinHandle<bool> {
    let ch = ch.clone();
    tokio::spawn(async move {
        let confirm = publish_persistent(&ch, queue, id)
            .await
            .expect("basic.publish");
        matches!(confirm.await, Ok(Confirmation::Ack(_)))
    })
}

/// What the management API and `/metrics` say about the disk alarm: (`disk_free_alarm` and
/// `disk_free_limit` of `/api/nodes`, the status of `/api/health/checks/alarms`,
/// `rabbitmq_alarms_free_disk_space_watermark`).
async fn reported(api: &Api) -> (bool, u64, u16, f64) {
    let nodes = api.get("/api/nodes").await;
    let node = &nodes[0];
    let health = api.call("GET", "/api/health/checks/alarms", None).await;
    let metrics = parse_prometheus(&api.call("GET", "/metrics", None).await.text);
    (
        node["disk_free_alarm"].as_bool().unwrap(),
        node["disk_free_limit"].as_u64().unwrap(),
        health.status,
        metrics["rabbitmq_alarms_free_disk_space_watermark"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_above_the_free_space_blocks_publishers_low_on_disk_while_consumers_drain() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, api) = start_with_limit(dir.path(), u64::MAX).await;
    let url = broker.amqp_url();
    assert_eq!(reported(&api).await, (true, u64::MAX, 503, 1.0));

    let publisher = connect_url(&url).await;
    let mut events = publisher.events_listener();
    let ch = confirm_channel(&publisher).await;
    ch.queue_declare("held".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    // A connection is blocked right after its first publish.
    let first = publish_one(&ch, "held", 1);
    assert_eq!(
        next_blocking_event(&mut events).await.as_deref(),
        Some("low on disk")
    );
    let first = tokio::time::timeout(ANSWER, first).await;
    assert!(
        first.expect("confirm within 20 s").unwrap(),
        "the publish before the block is confirmed"
    );
    let held_back = publish_one(&ch, "held", 2);

    // A consumer on another connection is not blocked: it drains what arrived.
    let drained = drain(&url, "held", true).await;
    assert_eq!(drained, BTreeSet::from([1]));
    assert!(
        publisher.status().blocked(),
        "still blocked: the disk is still low"
    );
    assert!(!held_back.is_finished());
    held_back.abort();
    // lapin sends nothing to a broker that blocked it, `connection.close` included: the
    // broker's shutdown closes it.
    tokio::time::timeout(ANSWER, broker.shutdown())
        .await
        .expect("the broker shuts down with a blocked connection");
    drop(publisher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_alarm_clears_when_space_returns() {
    let Some(disk) = Tmpfs::mount(DISK) else {
        return;
    };
    let data_dir = disk.path().join("data");
    let limit = 8 << 20;
    let (broker, api) = start_with_limit(&data_dir, limit).await;
    assert_eq!(reported(&api).await, (false, limit, 200, 0.0));
    let publisher = connect_url(&broker.amqp_url()).await;
    let mut events = publisher.events_listener();
    let ch = confirm_channel(&publisher).await;
    ch.queue_declare("q".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    assert!(publish_one(&ch, "q", 1).await.unwrap());

    // Another process takes the space: free space falls below the limit within a check.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 12 << 20]).unwrap();
    assert_eq!(
        next_blocking_event(&mut events).await.as_deref(),
        Some("low on disk")
    );
    assert_eq!(reported(&api).await, (true, limit, 503, 1.0));
    let held_back = publish_one(&ch, "q", 2);

    // It gives the space back: unblocked, and the held-back publish is confirmed.
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(next_blocking_event(&mut events).await, None);
    let confirmed = tokio::time::timeout(ANSWER, held_back).await;
    assert!(confirmed.expect("confirm after the unblock").unwrap());
    assert_eq!(reported(&api).await, (false, limit, 200, 0.0));
    let _ = publisher.close(200, "bye".into()).await;
    broker.shutdown().await;
}
