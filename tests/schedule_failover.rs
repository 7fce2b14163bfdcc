//! Periodic tasks (issue 22, Done means 1): three worker processes each run the scheduler with
//! a schedule every second; over 30 s exactly 30 ticks fire (±1 at the edges); the firing
//! process is killed (SIGKILL) a third of the way in and another one goes on within the
//! documented failover time; no tick fires twice.
//!
//! Runs on the bundled broker (in this process; the children connect to it), or on RabbitMQ
//! with `LEPUS_TEST_AMQP_URL` (names prefixed).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod amqp;
mod common;

use amqp::declare_durable_queue;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use lepus::schedule::{Schedule, Scheduler, DEFAULT_FAILOVER_POLL, HEADER_SCHEDULER, HEADER_TICK};

const CHILD_VAR: &str = "LEPUS_SCHEDULE_CHILD";

/// The scheduled task (never run here: the test reads the queue itself).
#[lepus::task(queue = "sched.ticks")]
async fn tick() {}

/// A worker process: runs the scheduler until killed.
#[test]
#[ignore = "run by the tests of this file as a child process"]
fn child_scheduler() {
    common::run_child(CHILD_VAR, |conn, [prefix]| async move {
        let every_second = Schedule::task::<tick>("every-second", "* * * * * *", []).unwrap();
        Scheduler::new(&conn)
            .queue_prefix(prefix)
            .schedule(every_second)
            .run_until(std::future::pending::<()>())
            .await
            .unwrap();
    });
}

fn spawn_child(url: &str, prefix: &str) -> Child {
    common::test_child("child_scheduler")
        .env(CHILD_VAR, format!("{url} {prefix}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills the children when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn header_int(headers: &FieldTable, name: &str) -> i64 {
    match headers.inner().get(name) {
        Some(AMQPValue::LongLongInt(v)) => *v,
        Some(AMQPValue::LongInt(v)) => i64::from(*v),
        other => panic!("{name}: {other:?}"),
    }
}

fn header_str(headers: &FieldTable, name: &str) -> String {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(v)) => v.to_string(),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_fire_a_one_second_schedule_once_per_tick_through_a_kill() {
    let broker = common::broker().await;
    let prefix = if broker.is_bundled() {
        String::new()
    } else {
        format!("{}.", common::unique("sched"))
    };
    let queue = format!("{prefix}sched.ticks");
    // Read the ticks as they are fired.
    let conn = lapin::Connection::connect(broker.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    declare_durable_queue(&channel, &queue).await;
    let mut ticks = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut children = Children((0..3).map(|_| spawn_child(broker.url(), &prefix)).collect());
    // tick (ms) -> how many times it fired, and by whom.
    let mut fired: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut first: Option<i64> = None;
    let mut killed: Option<(Instant, String, i64)> = None;
    let mut failover: Option<(Duration, String)> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "ticks stopped: {fired:?}");
        let delivery = tokio::time::timeout(Duration::from_secs(20), ticks.next())
            .await
            .expect("a tick within 20 s")
            .unwrap()
            .unwrap();
        let headers = delivery.properties.headers().clone().unwrap();
        let tick = header_int(&headers, HEADER_TICK);
        let by = header_str(&headers, HEADER_SCHEDULER);
        assert_eq!(
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            Some(format!("every-second@{tick}"))
        );
        fired.entry(tick).or_default().push(by.clone());
        let first = *first.get_or_insert(tick);
        match &killed {
            // A third of the way in, kill the process that fired this tick.
            None if tick >= first + 10_000 => {
                let pid: u32 = by.split(':').nth(1).unwrap().parse().unwrap();
                let child = children
                    .0
                    .iter_mut()
                    .find(|child| child.id() == pid)
                    .expect("the firing process is one of ours");
                child.kill().unwrap();
                child.wait().unwrap();
                killed = Some((Instant::now(), by.clone(), tick));
            }
            Some((at, victim, _)) if failover.is_none() && by != *victim => {
                failover = Some((at.elapsed(), by.clone()));
            }
            _ => {}
        }
        if tick >= first + 30_000 {
            break;
        }
    }
    drop(children);
    let first = first.unwrap();
    let doubled: Vec<_> = fired.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(doubled.is_empty(), "ticks fired twice: {doubled:?}");
    let in_window = fired.range(first..first + 30_000).count();
    assert!(
        (29..=31).contains(&in_window),
        "{in_window} ticks in 30 s: {:?}",
        fired.keys().collect::<Vec<_>>()
    );
    // Ticks are whole seconds.
    assert!(fired.keys().all(|tick| tick % 1000 == 0));
    let (_, victim, last_by_victim) = killed.expect("the firing process was killed");
    let (took, successor) = failover.expect("another process fired after the kill");
    assert_ne!(successor, victim);
    // The victim fired nothing after its death.
    assert!(fired
        .range(last_by_victim + 1..)
        .all(|(_, by)| !by.contains(&victim)));
    // Documented: within the failover poll once the broker dropped the dead connection (at
    // once for a killed process), plus the wait for the next tick (1 s); generous slack for a
    // loaded machine.
    let bound = DEFAULT_FAILOVER_POLL + Duration::from_secs(1) + Duration::from_secs(3);
    assert!(took <= bound, "failover took {took:?} (bound {bound:?})");
    let processes: HashSet<&String> = fired.values().flatten().collect();
    assert!(processes.len() >= 2, "{processes:?}");
    println!(
        "{in_window} ticks in 30 s from {} processes; failover {took:?}",
        processes.len()
    );
    let _ = conn.close(200, "done".into()).await;
    broker.stop().await;
}
