//! Connection recovery: calls in flight when the link drops fail with a clear error; clients
//! and workers reconnect with backoff, redeclare their queues and serve again.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod common;
mod rpc_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::background::BackgroundWorker;
use lepus::{Backoff, CallOptions, Client, ConnectOptions, Error, State};
use rpc_util::{eventually, CuttableProxy};

/// Sleeps `ms`, then answers; counts the naps started in its state.
#[lepus::rpc(queue = "napper")]
async fn nap(State(started): State<Arc<AtomicUsize>>, ms: u64) -> u64 {
    started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Fast reconnection for tests.
fn options(url: &str, name: &str) -> ConnectOptions {
    ConnectOptions::new(url)
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .connection_name(name)
}

/// Calls `nap(0)` until it answers (through reconnection), with short per-call timeouts.
async fn until_served(client: &Client) {
    eventually("nap(0) to answer", || async {
        let quick = CallOptions::default().timeout(Duration::from_millis(500));
        nap::call_with(client, 0, quick).await.ok()
    })
    .await;
}

/// A worker serving `nap` and a client, each on a reconnecting connection of its own.
struct NapPair {
    /// The worker's connection (named `<prefix> worker`).
    worker_conn: lepus::Connection,
    /// The worker serving `nap` on it.
    worker: BackgroundWorker,
    /// The client's connection (named `<prefix> client`).
    client_conn: lepus::Connection,
    /// The client calling `nap` on it.
    client: Client,
}

impl NapPair {
    /// Starts the worker (counting its naps in `naps`) and the client, each on its own
    /// connection to `url`; returns once the worker serves the client's calls.
    async fn start(url: &str, prefix: &str, naps: &Arc<AtomicUsize>) -> Self {
        let worker_conn = options(url, &format!("{prefix} worker"))
            .connect()
            .await
            .unwrap();
        let worker = BackgroundWorker::start_on(worker_conn.clone(), prefix, |w| {
            w.state(naps.clone()).serve(nap::handler())
        });
        let client_conn = options(url, &format!("{prefix} client"))
            .connect()
            .await
            .unwrap();
        let client = Client::builder(&client_conn)
            .queue_prefix(prefix)
            .build()
            .await
            .unwrap();
        until_served(&client).await;
        Self {
            worker_conn,
            worker,
            client_conn,
            client,
        }
    }

    /// After the link was lost: waits until the client's calls are served again, asserts that
    /// both sides opened a new connection, and checks that a nap of `ms` answers `ms`.
    async fn assert_both_reconnected(&self, ms: u64) {
        until_served(&self.client).await;
        assert!(self.client_conn.generation() >= 2, "the client reconnected");
        assert!(self.worker_conn.generation() >= 2, "the worker reconnected");
        assert_eq!(nap::call(&self.client, ms).await.unwrap(), ms);
    }

    /// Shuts the worker down and closes the client's connection.
    async fn stop(self) {
        self.worker.shutdown().await;
        self.client_conn.close().await;
    }
}

#[tokio::test]
async fn a_cut_link_fails_calls_in_flight_then_both_sides_reconnect() {
    let broker = common::broker().await;
    let proxy = CuttableProxy::start(broker.url()).await;
    let url = proxy.url(broker.url());
    let prefix = common::unique("rpc");
    let naps = Arc::new(AtomicUsize::new(0));
    let pair = NapPair::start(&url, &prefix, &naps).await;
    assert_eq!(pair.client_conn.generation(), 1);

    let started = naps.load(Ordering::SeqCst);
    let in_flight = tokio::spawn({
        let client = pair.client.clone();
        async move {
            let patient = CallOptions::default().timeout(Duration::from_secs(30));
            nap::call_with(&client, 5_000, patient).await
        }
    });
    eventually("the long nap to start", || async {
        (naps.load(Ordering::SeqCst) > started).then_some(())
    })
    .await;

    proxy.cut_for(Duration::from_millis(300)).await;
    let lost = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight call ends well before its 30 s timeout")
        .unwrap();
    match lost {
        Err(err @ Error::ConnectionLost) => assert!(err.is_retryable()),
        other => panic!("expected ConnectionLost, got {other:?}"),
    }

    pair.assert_both_reconnected(7).await;
    pair.stop().await;
    broker.stop().await;
}

/// Closes every RabbitMQ connection whose `connection_name` contains `tag`, with rabbitmqctl.
/// `Err` explains why it could not (the tool is missing or the node unreachable).
fn rabbitmq_close_connections(tag: &str) -> Result<usize, String> {
    let node = std::env::var("RABBITMQ_NODENAME").unwrap_or_else(|_| "lepus-ci@localhost".into());
    let path = format!(
        "/usr/lib/rabbitmq/bin:/usr/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    // rabbitmqctl, quiet, against `node`: `args` is the command and its arguments.
    let rabbitmqctl = |args: &[&str]| {
        let mut command = std::process::Command::new("rabbitmqctl");
        command
            .env("PATH", &path)
            .args(["-n", &node, "-q"])
            .args(args);
        command
    };
    let listed = rabbitmqctl(&["list_connections", "pid", "client_properties"])
        .output()
        .map_err(|e| format!("rabbitmqctl unavailable: {e}"))?;
    if !listed.status.success() {
        return Err(format!(
            "rabbitmqctl list_connections failed: {}",
            String::from_utf8_lossy(&listed.stderr)
        ));
    }
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if !line.contains(tag) {
            continue;
        }
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let status = rabbitmqctl(&["close_connection", pid, "lepus test: broker restart"])
            .status()
            .map_err(|e| format!("rabbitmqctl close_connection: {e}"))?;
        if status.success() {
            closed += 1;
        }
    }
    Ok(closed)
}

#[tokio::test]
async fn clients_and_workers_come_back_after_a_broker_restart() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let naps = Arc::new(AtomicUsize::new(0));
    let url = broker.url().to_owned();
    let pair = NapPair::start(&url, &prefix, &naps).await;

    // The restart: the bundled broker stops and a new one starts on the same port (with no
    // queues: the worker must redeclare); RabbitMQ closes our connections.
    let restarted = if broker.is_bundled() {
        let addr = broker.handle().expect("bundled").local_addr();
        broker.stop().await;
        let again = lepus::broker::Broker::builder()
            .listen(addr.to_string())
            .start()
            .await
            .expect("a new broker binds the same port");
        Some(again)
    } else {
        let tag = prefix.clone();
        match tokio::task::spawn_blocking(move || rabbitmq_close_connections(&tag))
            .await
            .unwrap()
        {
            Ok(closed) => {
                // The worker's, its publisher's (a sibling connection named
                // "<name> (publisher)" since issue 23) and the client's.
                assert_eq!(
                    closed, 3,
                    "the worker's, the worker's publisher's and the client's connections"
                );
                None
            }
            Err(reason) => {
                println!("skipped: cannot restart the external broker: {reason}");
                pair.worker.kill().await;
                return;
            }
        }
    };

    pair.assert_both_reconnected(3).await;
    pair.stop().await;
    if let Some(again) = restarted {
        again.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_first_url_fails_over_to_the_next() {
    let broker = common::broker().await;
    // A loopback port nobody listens on: bind one, note it, free it.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dead_url = format!("amqp://guest:guest@{dead}/%2f");
    let conn = ConnectOptions::new(dead_url)
        .url(broker.url())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the second URL answers");
    assert!(conn.is_connected());
    assert_eq!(conn.generation(), 1);

    let only_dead = ConnectOptions::new(format!("amqp://guest:guest@{dead}/%2f"))
        .connect()
        .await;
    assert!(
        matches!(only_dead, Err(Error::Transport(_))),
        "{only_dead:?}"
    );
    conn.close().await;
    assert!(!conn.is_connected());
    broker.stop().await;
}
