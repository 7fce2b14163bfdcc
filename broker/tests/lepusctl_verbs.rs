//! `lepusctl` against a running in-process broker: every verb, through the real binary, its
//! management API client and the broker's management API, checked both in lepusctl's table
//! output and in the broker's behaviour (logins, permissions, queues, connections).
//!
//! This suite lives in the `lepus-broker` package because Cargo only exposes a binary's path
//! (`CARGO_BIN_EXE_lepusctl`) to tests of the same package.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::amqp::{closed_within, consume_tagged, declare_plain_queue};

use lapin::options::{BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus_broker::BrokerHandle;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn ctl_as(broker: &BrokerHandle, user: &str, password: &str, args: &[&str]) -> Out {
    let api = format!(
        "http://{}",
        broker.management_addr().expect("management on")
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lepusctl"))
        .arg("--api")
        .arg(&api)
        .arg("--user")
        .arg(user)
        .arg("--password")
        .arg(password)
        .args(args)
        .output()
        .await
        .expect("run lepusctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs lepusctl as guest and requires success.
async fn ctl(broker: &BrokerHandle, args: &[&str]) -> String {
    let out = ctl_as(broker, "guest", "guest", args).await;
    assert_eq!(
        out.code, 0,
        "lepusctl {args:?} failed: {}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The table rows of a list verb's output (without the informational line and header).
fn rows(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.ends_with("..."))
        .skip(1)
        .map(str::to_owned)
        .collect()
}

async fn connect(
    broker: &BrokerHandle,
    user: &str,
    pass: &str,
    vhost: &str,
) -> lapin::Result<Connection> {
    let url = format!("amqp://{user}:{pass}@{}/{vhost}", broker.local_addr());
    tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connect within 5 s")
}

/// Publishes `n` messages `m` to each `(queue, n)` through the default exchange, waiting for
/// each one's confirm on a confirm channel.
async fn publish_each(ch: &lapin::Channel, counts: &[(&str, usize)]) {
    for &(q, n) in counts {
        for _ in 0..n {
            ch.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn every_verb_against_a_running_broker() {
    let broker = common::http::broker_with_management().await;

    // Users.
    let out = ctl(&broker, &["add_user", "bob", "pw1"]).await;
    assert!(out.starts_with("Adding user \"bob\" ..."), "{out}");
    let again = ctl_as(&broker, "guest", "guest", &["add_user", "bob", "x"]).await;
    assert_eq!(again.code, 70, "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    ctl(&broker, &["set_user_tags", "bob", "monitoring"]).await;
    let users = rows(&ctl(&broker, &["list_users"]).await);
    assert!(users.contains(&"bob\t[monitoring]".to_owned()), "{users:?}");
    assert!(
        users.contains(&"guest\t[administrator]".to_owned()),
        "{users:?}"
    );
    assert_eq!(
        ctl(&broker, &["-q", "list_users"]).await.lines().next(),
        Some("user\ttags"),
        "-q drops the informational line"
    );

    // Vhosts and permissions.
    ctl(&broker, &["add_vhost", "v1"]).await;
    let vhosts = rows(&ctl(&broker, &["list_vhosts"]).await);
    assert_eq!(vhosts, vec!["/".to_owned(), "v1".to_owned()]);
    ctl(
        &broker,
        &["set_permissions", "-p", "v1", "bob", ".*", ".*", ".*"],
    )
    .await;
    let perms = rows(&ctl(&broker, &["list_permissions", "-p", "v1"]).await);
    assert_eq!(perms, vec!["bob\t.*\t.*\t.*".to_owned()]);

    // change_password: the old password stops working.
    ctl(&broker, &["change_password", "bob", "pw2"]).await;
    assert!(connect(&broker, "bob", "pw1", "v1").await.is_err());
    let conn = connect(&broker, "bob", "pw2", "v1")
        .await
        .expect("bob logs in");

    // Queues, exchanges, bindings, consumers.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["q1", "q2"] {
        declare_plain_queue(&ch, q).await;
    }
    publish_each(&ch, &[("q1", 3), ("q2", 2)]).await;
    let queues = rows(
        &ctl(
            &broker,
            &[
                "list_queues",
                "-p",
                "v1",
                "name",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ],
        )
        .await,
    );
    assert_eq!(
        queues,
        vec!["q1\t3\t3\t0\t0".to_owned(), "q2\t2\t2\t0\t0".to_owned()]
    );
    let exchanges = rows(&ctl(&broker, &["list_exchanges", "-p", "v1"]).await);
    assert!(
        exchanges.contains(&"amq.topic\ttopic".to_owned()),
        "{exchanges:?}"
    );
    let bindings = rows(&ctl(&broker, &["list_bindings", "-p", "v1"]).await);
    assert!(
        bindings.contains(&"\texchange\tq1\tqueue\tq1\t[]".to_owned()),
        "{bindings:?}"
    );

    let cch = conn.create_channel().await.unwrap();
    let _consumer = consume_tagged(&cch, "q1", "ctag-1", false).await;
    let consumers = rows(&ctl(&broker, &["list_consumers", "-p", "v1"]).await);
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert!(consumers[0].starts_with("q1\t"), "{consumers:?}");
    assert!(consumers[0].contains("\tctag-1\ttrue\t"), "{consumers:?}");

    // Purge and delete.
    ctl(&broker, &["purge_queue", "-p", "v1", "q2"]).await;
    ctl(&broker, &["delete_queue", "-p", "v1", "q1"]).await;
    let queues = rows(&ctl(&broker, &["list_queues", "-p", "v1"]).await);
    assert_eq!(queues, vec!["q2\t0".to_owned()]);

    // Connections: list, then close bob's by name.
    let conns = rows(
        &ctl(
            &broker,
            &["list_connections", "name", "user", "vhost", "peer_host"],
        )
        .await,
    );
    assert_eq!(conns.len(), 1, "{conns:?}");
    let cols: Vec<&str> = conns[0].split('\t').collect();
    assert_eq!(&cols[1..], &["bob", "v1", "127.0.0.1"]);
    ctl(&broker, &["close_connection", cols[0], "bye"]).await;
    assert!(
        closed_within(&conn, Duration::from_millis(2500)).await,
        "close_connection closed bob's connection"
    );

    // Writes need the administrator tag; bob (monitoring) may read but not write.
    let denied = ctl_as(&broker, "bob", "pw2", &["add_vhost", "nope"]).await;
    assert_eq!(denied.code, 70, "{}", denied.stderr);
    let read = ctl_as(&broker, "bob", "pw2", &["list_vhosts"]).await;
    assert_eq!(read.code, 0, "{}", read.stderr);
    let bad_login = ctl_as(&broker, "bob", "wrong", &["list_users"]).await;
    assert_eq!(bad_login.code, 70, "{}", bad_login.stderr);

    // clear_permissions, delete_user, delete_vhost.
    ctl(&broker, &["clear_permissions", "-p", "v1", "bob"]).await;
    assert!(rows(&ctl(&broker, &["list_permissions", "-p", "v1"]).await).is_empty());
    ctl(&broker, &["delete_user", "bob"]).await;
    let users = rows(&ctl(&broker, &["list_users"]).await);
    assert_eq!(users, vec!["guest\t[administrator]".to_owned()]);
    ctl(&broker, &["delete_vhost", "v1"]).await;
    assert_eq!(
        rows(&ctl(&broker, &["list_vhosts"]).await),
        vec!["/".to_owned()]
    );
    let gone = ctl_as(&broker, "guest", "guest", &["delete_user", "bob"]).await;
    assert_eq!(gone.code, 70);

    let api = broker.management_addr().unwrap();
    broker.shutdown().await;
    // Nothing listens any more: 69, "unavailable".
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lepusctl"))
        .args(["--api", &format!("http://{api}"), "list_users"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
}

/// Issue 13 item 9: `--help` printed `[env: LEPUS_PASSWORD=<the password>]`. Secrets from the
/// environment show in no help text and no error message.
#[tokio::test]
async fn secrets_from_the_environment_are_never_printed() {
    const PASSWORD: &str = "pw-from-env-7c1f";
    const API_SECRET: &str = "api-secret-93ab";
    let run = |args: &'static [&'static str]| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lepusctl"))
            .args(args)
            .env("LEPUS_PASSWORD", PASSWORD)
            // Nothing listens on port 1 of the loopback address: the command fails fast.
            .env(
                "LEPUS_API",
                format!("http://admin:{API_SECRET}@127.0.0.1:1"),
            )
            .output()
            .await
            .unwrap()
    };
    for args in [
        &["--help"][..],
        &["-h"][..],
        &["list_users", "--help"][..],
        &["list_users"][..],
    ] {
        let out = run(args).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.is_empty(), "{args:?} printed nothing");
        for secret in [PASSWORD, API_SECRET] {
            assert!(!text.contains(secret), "{args:?} printed {secret}: {text}");
        }
    }
    // The variables are still read: the failing call names the (masked) API it tried.
    let out = run(&["list_users"]).await;
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://admin:***@127.0.0.1:1"), "{err}");
}

/// Receives `n` deliveries from `consumer` (fails the test after 5 s).
async fn receive(consumer: &mut lapin::Consumer, n: usize) -> Vec<lapin::message::Delivery> {
    use futures::StreamExt;
    let mut out = Vec::new();
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("a delivery within 5 s")
            .expect("consumer open")
            .expect("delivery");
        out.push(d);
    }
    out
}

#[tokio::test]
async fn list_channels_counts_consumers_and_unacked_messages() {
    let broker = common::http::broker_with_management().await;
    let conn = connect(&broker, "guest", "guest", "%2f")
        .await
        .expect("guest logs in");

    // Channel 1: prefetch 5 per consumer, one consumer holding 3 unacked deliveries.
    let a = conn.create_channel().await.unwrap();
    a.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    declare_plain_queue(&a, "qa").await;
    let mut ca = consume_tagged(&a, "qa", "ca", false).await;
    // Channel 2: confirm mode, two consumers holding 3 + 1 unacked deliveries.
    let b = conn.create_channel().await.unwrap();
    b.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_plain_queue(&b, "qb1").await;
    declare_plain_queue(&b, "qb2").await;
    let mut cb1 = consume_tagged(&b, "qb1", "cb1", false).await;
    let mut cb2 = consume_tagged(&b, "qb2", "cb2", false).await;
    // Channel 3: transactional, no consumers.
    let c = conn.create_channel().await.unwrap();
    c.tx_select().await.unwrap();
    assert_eq!((a.id(), b.id(), c.id()), (1, 2, 3));

    publish_each(&b, &[("qa", 3), ("qb1", 3), ("qb2", 1)]).await;
    // Once the client holds the deliveries, the broker has them as unacked.
    let held_a = receive(&mut ca, 3).await;
    receive(&mut cb1, 3).await;
    receive(&mut cb2, 1).await;

    let conns = rows(&ctl(&broker, &["list_connections", "name"]).await);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let name = &conns[0];
    assert!(name.starts_with("127.0.0.1:"), "{name}");

    // Default columns, as rabbitmqctl: pid user consumer_count messages_unacknowledged.
    let out = ctl(&broker, &["list_channels"]).await;
    assert!(out.starts_with("Listing channels ..."), "{out}");
    assert_eq!(
        out.lines().nth(1),
        Some("pid\tuser\tconsumer_count\tmessages_unacknowledged")
    );
    assert_eq!(
        rows(&out),
        vec![
            format!("{name} (1)\tguest\t1\t3"),
            format!("{name} (2)\tguest\t2\t4"),
            format!("{name} (3)\tguest\t0\t0"),
        ]
    );

    // Chosen columns.
    let cols = [
        "list_channels",
        "name",
        "connection",
        "number",
        "user",
        "vhost",
        "confirm",
        "transactional",
        "prefetch_count",
        "consumer_count",
        "messages_unacknowledged",
    ];
    assert_eq!(
        rows(&ctl(&broker, &cols).await),
        vec![
            format!("{name} (1)\t{name}\t1\tguest\t/\tfalse\tfalse\t5\t1\t3"),
            format!("{name} (2)\t{name}\t2\tguest\t/\ttrue\tfalse\t0\t2\t4"),
            format!("{name} (3)\t{name}\t3\tguest\t/\tfalse\ttrue\t0\t0\t0"),
        ]
    );

    // Acks lower the count; a closed channel leaves the list.
    held_a[1]
        .acker
        .ack(lapin::options::BasicAckOptions { multiple: true })
        .await
        .unwrap();
    b.close(200, "bye".into()).await.unwrap();
    let cols = ["-q", "list_channels", "number", "messages_unacknowledged"];
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = rows(&ctl(&broker, &cols).await);
        if seen == ["1\t1", "3\t0"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, ["1\t1", "3\t0"]);

    conn.close(200, "bye".into()).await.unwrap();
    let mut left = Vec::new();
    for _ in 0..50 {
        left = rows(&ctl(&broker, &["list_channels"]).await);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_empty(), "no channels after the close: {left:?}");
    broker.shutdown().await;
}

/// Serves `answers` in turn, one connection each, on 127.0.0.1 port 0: reads a request's head
/// and writes the given bytes (status line, headers and body), then closes. Returns the API URL.
fn serve_answers(answers: Vec<Vec<u8>>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for answer in answers {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            // The client may stop reading (an answer over its limit): ignore a broken pipe.
            let _ = reader.get_mut().write_all(&answer);
        }
    });
    url
}

/// An HTTP answer with a JSON body; `announce` bytes in Content-Length (more than the body
/// for an answer cut short).
fn json_answer(body: &[u8], announce: usize) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {announce}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A broker with ~20,000 queues answers `/api/queues` with more than 10 MiB, which ureq reads
/// at most by default: `list_queues` printed its header and no row, exit 0, and
/// `export_definitions` wrote `null` to the backup file. Every row is read now, the export is
/// whole, and an answer cut short fails (76), never passing for an empty one.
#[tokio::test]
async fn answers_over_ten_mib_are_read_whole_or_fail() {
    const QUEUES: usize = 60_000;
    let queues: Vec<serde_json::Value> = (0..QUEUES)
        .map(|i| {
            serde_json::json!({
                "name": format!("queue-{i:06}-{}", "x".repeat(150)),
                "vhost": "/",
                "messages": i,
            })
        })
        .collect();
    let listing = serde_json::to_vec(&queues).unwrap();
    assert!(listing.len() > 10 << 20, "{} bytes", listing.len());
    let definitions = serde_json::to_vec(&serde_json::json!({ "queues": queues })).unwrap();
    let api = serve_answers(vec![
        json_answer(&listing, listing.len()),
        json_answer(&definitions, definitions.len()),
        json_answer(&listing[..listing.len() / 2], listing.len()),
    ]);
    let run = |args: Vec<String>| {
        let api = api.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_lepusctl"))
                .arg("--api")
                .arg(api)
                .args(args)
                .output()
                .await
                .unwrap()
        }
    };

    let out = run(vec!["list_queues".into()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = rows(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(listed.len(), QUEUES);
    assert_eq!(
        listed[QUEUES - 1],
        format!(
            "queue-{:06}-{}\t{}",
            QUEUES - 1,
            "x".repeat(150),
            QUEUES - 1
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("definitions.json");
    let out = run(vec![
        "export_definitions".into(),
        file.display().to_string(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported["queues"].as_array().map(Vec::len), Some(QUEUES));

    let out = run(vec!["list_queues".into()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{stderr}");
    assert!(
        stderr.contains("cannot read the management API's answer"),
        "{stderr}"
    );
    assert!(rows(&String::from_utf8_lossy(&out.stdout)).is_empty());
}
