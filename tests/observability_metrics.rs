//! Issue 17, Done means 3: a worker's Prometheus endpoint (`lepus::metrics::serve`), scraped
//! over HTTP after a known mix of calls (ok, remote error, timeout, panic) and of task
//! failures, shows exactly those counts per outcome, histograms with that many observations,
//! and nothing in flight; the client's side counts the same calls by the outcome its caller saw.
//!
//! Runs on the bundled broker, or on the one `LEPUS_TEST_AMQP_URL` names.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lepus::{CallOptions, Error, FailureKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 0: ok, 1: the application's error, 2: too slow for its caller, 3: a panic.
#[lepus::rpc(queue = "obs.mix")]
async fn mixed(kind: u8) -> Result<u32, String> {
    match kind {
        0 => Ok(7),
        1 => Err("refused".into()),
        2 => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(0)
        }
        _ => panic!("kind {kind} panics"),
    }
}

/// Fails every attempt: one retry, then the dead-letter queue.
#[lepus::task(queue = "obs.failing", retries = 1, backoff = "10ms..10ms")]
async fn failing(_n: u32) -> Result<(), String> {
    Err("always".into())
}

/// GETs `path` from `addr`: (status line, body).
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample of `family` whose labels include every pair of `labels`.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(family) && line[family.len()..].starts_with(['{', ' ']))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn the_metrics_endpoint_counts_a_known_mix_exactly() {
    let server = lepus::metrics::serve("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let mut bed = common::test_bed("obsm").await;
    bed.worker(|w| w.concurrency(4).serve(mixed::handler()))
        .await
        .unwrap();
    let mut failures = bed.serve(failing::handler()).await.unwrap();
    let queue = format!("{}obs.mix", bed.prefix());
    let tasks = format!("{}obs.failing", bed.prefix());

    let quick = CallOptions::default().timeout(Duration::from_secs(20));
    let mix: [(u8, usize); 4] = [(0, 3), (1, 2), (2, 1), (3, 2)];
    for (kind, times) in mix {
        for _ in 0..times {
            let options = if kind == 2 {
                CallOptions::default().timeout(Duration::from_millis(300))
            } else {
                quick.clone()
            };
            let result = mixed::call_with(bed.client(), kind, options).await;
            match (kind, result) {
                (0, Ok(7)) | (1, Err(Error::Remote(_))) | (2, Err(Error::Timeout(_))) => {}
                (
                    3,
                    Err(Error::Failed {
                        kind: FailureKind::Panicked,
                        ..
                    }),
                ) => {}
                (kind, other) => panic!("kind {kind}: {other:?}"),
            }
        }
    }
    failing::enqueue(bed.client(), 1).await.unwrap();
    for _ in 0..2 {
        failures.next().await.unwrap();
    }

    // The timed-out run is stopped at its caller's deadline, a moment after the caller gave up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let runs = sample(
            &text,
            "lepus_handler_duration_seconds_count",
            &[("queue", &queue), ("handler", "mixed")],
        );
        let dead = sample(
            &text,
            "lepus_handler_dead_letters_total",
            &[("queue", &tasks), ("handler", "failing")],
        );
        if runs == Some(8.0) && dead == Some(1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    for (outcome, count) in [
        ("ok", 3.0),
        ("remote_error", 2.0),
        ("timeout", 1.0),
        ("panic", 2.0),
    ] {
        // Each outcome is counted once by the handler's side and once by the caller's.
        for (side, metric, name_label) in [
            ("handler", "lepus_handler_requests_total", "handler"),
            ("client", "lepus_client_calls_total", "method"),
        ] {
            let labels = [
                ("queue", queue.as_str()),
                (name_label, "mixed"),
                ("outcome", outcome),
            ];
            assert_eq!(
                sample(&text, metric, &labels),
                Some(count),
                "{side} {outcome}: {text}"
            );
        }
    }
    let labels = [("queue", queue.as_str()), ("handler", "mixed")];
    assert_eq!(sample(&text, "lepus_handler_in_flight", &labels), Some(0.0));
    // Every run in the histogram's +Inf bucket; the timed-out one took at least 300 ms.
    let inf = [
        ("queue", queue.as_str()),
        ("handler", "mixed"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        sample(&text, "lepus_handler_duration_seconds_bucket", &inf),
        Some(8.0)
    );
    let fast = [
        ("queue", queue.as_str()),
        ("handler", "mixed"),
        ("le", "0.25"),
    ];
    assert!(sample(&text, "lepus_handler_duration_seconds_bucket", &fast) <= Some(7.0));
    let calls = [("queue", queue.as_str()), ("method", "mixed")];
    assert_eq!(
        sample(&text, "lepus_client_call_duration_seconds_count", &calls),
        Some(8.0)
    );
    // The task: a retry, then the dead-letter queue.
    let task = [("queue", tasks.as_str()), ("handler", "failing")];
    assert_eq!(
        sample(&text, "lepus_handler_retries_total", &task),
        Some(1.0)
    );
    let by = |outcome| {
        [
            ("queue", tasks.as_str()),
            ("handler", "failing"),
            ("outcome", outcome),
        ]
    };
    assert_eq!(
        sample(&text, "lepus_handler_requests_total", &by("retry")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "lepus_handler_requests_total", &by("dead_lettered")),
        Some(1.0)
    );
    // Anything but GET /metrics is 404.
    assert_eq!(get(addr, "/").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        lepus::metrics::render()
            .lines()
            .next()
            .map(|l| l.starts_with('#')),
        Some(true)
    );
    bed.stop().await;
    drop(server);
}
