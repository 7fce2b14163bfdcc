//! Crash test of the store alone: a child process appends and acks with several concurrent
//! publishers and reports each commit on stdout; the parent kills it with SIGKILL at a random
//! moment, reopens the store and checks that every committed message is there (unless an ack of
//! it was under way), in order, intact, that no committed ack is undone, and that nothing was
//! invented. Twenty cycles on one data
//! directory, so each cycle also recovers from the previous crashes.
//!
//! The child is the ignored test `crash_child`, run by the parent as
//! `<test binary> --ignored --exact store::crash_test::crash_child` with `LEPUS_STORE_CRASH_DIR`
//! set.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::TestDir;
use super::{PersistentMessage, Position, Store, StoreConfig};

fn msg<'a>(properties: &'a [u8], body: &'a [u8]) -> PersistentMessage<'a> {
    PersistentMessage {
        exchange: "",
        routing_key: "crash",
        properties,
        body,
    }
}

const DIR_ENV: &str = "LEPUS_STORE_CRASH_DIR";
const CYCLE_ENV: &str = "LEPUS_STORE_CRASH_CYCLE";
const PUBLISHERS: u32 = 4;

/// The body of message `id` ("c<cycle>-p<publisher>-n<seq>"): the id, `|`, then the id's bytes
/// repeated to a length derived from the id, so any damage or mix-up is detectable.
fn body_for(id: &str) -> Vec<u8> {
    let len = 32 + (crc32fast::hash(id.as_bytes()) % 1500) as usize;
    let mut body = format!("{id}|").into_bytes();
    body.extend(id.bytes().cycle().take(len));
    body
}

/// Parses an id back into (cycle, publisher, seq).
fn parse_id(id: &str) -> Option<(u32, u32, u64)> {
    let mut parts = id.split('-');
    let cycle = parts.next()?.strip_prefix('c')?.parse().ok()?;
    let publisher = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let seq = parts.next()?.strip_prefix('n')?.parse().ok()?;
    Some((cycle, publisher, seq))
}

#[test]
#[ignore = "child process of store_survives_sigkill_at_random_moments"]
fn crash_child() {
    let (Ok(dir), Ok(cycle)) = (std::env::var(DIR_ENV), std::env::var(CYCLE_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (store, _) = Store::open(StoreConfig::new(dir)).unwrap();
        let store = Arc::new(store);
        let (q, declared) = store
            .declare_queue("/", "crash", false, Bytes::new())
            .unwrap();
        declared.await.unwrap();
        let mut tasks = Vec::new();
        for publisher in 0..PUBLISHERS {
            let store = store.clone();
            let cycle = cycle.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine: Vec<(Position, String)> = Vec::new();
                for seq in 0u64.. {
                    let id = format!("c{cycle}-p{publisher}-n{seq}");
                    let (position, commit) =
                        store.enqueue(q, msg(b"props", &body_for(&id))).unwrap();
                    commit.await.unwrap();
                    println!("C {id}");
                    mine.push((position, id));
                    // Ack every third message, a little behind, as a consumer would.
                    if seq % 3 == 2 {
                        let (position, id) = mine.remove(mine.len() - 2);
                        // "R": from here the message may be gone; "A": it must be gone.
                        println!("R {id}");
                        store.remove(q, position).unwrap().await.unwrap();
                        println!("A {id}");
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn store_survives_sigkill_at_random_moments() {
    let dir = TestDir::new();
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(0x5167_4b11);
    let mut committed: HashSet<String> = HashSet::new();
    let mut acking: HashSet<String> = HashSet::new();
    let mut acked: HashSet<String> = HashSet::new();
    let (mut total_recovered, mut total_torn) = (0, 0);
    const CYCLES: u32 = 20;

    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "store::crash_test::crash_child"])
            .args(["--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &dir.0)
            .env(CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut by the kill has no newline: the commit it reports is not counted.
                if line.ends_with('\n') && lines_tx.send(line.trim_end().to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let mut record = |line: String| match line.split_once(' ') {
            Some(("C", id)) => {
                committed.insert(id.to_owned());
                true
            }
            Some(("R", id)) => {
                acking.insert(id.to_owned());
                false
            }
            Some(("A", id)) => {
                acked.insert(id.to_owned());
                false
            }
            _ => false, // the test harness's own output
        };
        // Let the child get going (its first commit), then kill it a random while later.
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(60)) {
            if record(line) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(10..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines_rx.try_iter() {
            record(line);
        }

        let (store, recovered) = Store::open(StoreConfig::new(&dir.0)).unwrap();
        total_torn += recovered.torn_tail_bytes;
        let queue = &recovered.queues[0]; // declared by the child before its first commit
        let mut seen = HashSet::new();
        let mut last_seq: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for &position in &queue.messages {
            let message = store.read(position).unwrap();
            let body = &message.body[..];
            let id = std::str::from_utf8(&body[..body.iter().position(|&b| b == b'|').unwrap()])
                .unwrap()
                .to_owned();
            assert_eq!(body, body_for(&id), "message {id} is intact");
            assert_eq!(&message.properties[..], b"props");
            assert_eq!(
                (&message.exchange[..], &message.routing_key[..]),
                ("", "crash")
            );
            let (c, p, seq) = parse_id(&id).unwrap();
            assert!(c <= cycle, "message {id} was never sent");
            // Each publisher's messages come back in the order they were sent.
            if let Some(previous) = last_seq.insert((c, p), seq) {
                assert!(previous < seq, "{id} after seq {previous}");
            }
            assert!(!acked.contains(&id), "committed ack of {id} was undone");
            assert!(seen.insert(id.clone()), "{id} recovered twice");
        }
        let lost: Vec<&String> = committed
            .iter()
            .filter(|id| !acking.contains(*id) && !seen.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: lost committed messages {lost:?}"
        );
        total_recovered += queue.messages.len();
        // Wait for the writer thread before the next child opens the directory.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(store.close()).unwrap();
    }
    println!(
        "crash test: {CYCLES} cycles, {} committed, {} acked, {total_recovered} recovered \
         (summed over cycles), {total_torn} torn-tail bytes dropped, lost = 0",
        committed.len(),
        acked.len()
    );
    assert!(
        committed.len() > CYCLES as usize,
        "the child must have committed messages"
    );
}
