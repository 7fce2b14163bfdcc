//! The management HTTP API and `/metrics` checked with a real HTTP client (ureq) against an
//! in-process broker: authentication and tags, RabbitMQ's JSON shapes, counters that follow
//! real AMQP traffic, and a strict parse of the Prometheus text format.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use base64::Engine;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus_broker::{Broker, BrokerHandle};
use serde_json::{json, Value};

/// (status, parsed JSON body or the text) of one request, run off the async runtime.
async fn http(
    broker: &BrokerHandle,
    method: &'static str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let url = format!("http://{}{path}", broker.management_addr().unwrap());
    let auth = auth.map(|(u, p)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let res = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("PUT", body) => {
                let mut r = agent.put(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.unwrap_or(json!({})))
            }
            _ => unreachable!("test uses GET, PUT, DELETE"),
        };
        let mut resp = res.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    })
    .await
    .unwrap()
}

const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));

/// An in-process broker with the management API on a free port.
async fn broker_with_api() -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0")
        .management_listen("127.0.0.1:0")
        .start()
        .await
        .unwrap()
}

/// A lapin connection to `broker` as guest.
async fn connect(broker: &BrokerHandle) -> Connection {
    Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn api_shapes_auth_and_counters() {
    let broker = broker_with_api().await;

    // Authentication: none or wrong -> 401 with a challenge; right -> 200.
    let (s, body, _) = http(&broker, "GET", "/api/overview", None, None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "not_authorised");
    let (s, _, _) = http(
        &broker,
        "GET",
        "/api/overview",
        Some(("guest", "nope")),
        None,
    )
    .await;
    assert_eq!(s, 401);

    // A user without tags cannot read; monitoring can read but not write.
    let (s, _, _) = http(
        &broker,
        "PUT",
        "/api/users/watcher",
        GUEST,
        Some(json!({"password": "pw", "tags": ""})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _, _) = http(&broker, "GET", "/api/queues", Some(("watcher", "pw")), None).await;
    assert_eq!(s, 403);
    http(
        &broker,
        "PUT",
        "/api/users/watcher",
        GUEST,
        Some(json!({"tags": "monitoring"})),
    )
    .await;
    let (s, _, _) = http(&broker, "GET", "/api/queues", Some(("watcher", "pw")), None).await;
    assert_eq!(s, 200);
    let (s, _, _) = http(
        &broker,
        "PUT",
        "/api/vhosts/x",
        Some(("watcher", "pw")),
        None,
    )
    .await;
    assert_eq!(s, 403);

    // AMQP traffic: 5 published to q, 2 fetched and acked.
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    for _ in 0..2 {
        let m = ch
            .basic_get("q".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Acks are asynchronous: a round trip on the channel orders them before the reads.
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();

    let (s, ov, _) = http(&broker, "GET", "/api/overview", GUEST, None).await;
    assert_eq!(s, 200);
    assert_eq!(ov["message_stats"]["publish"], 5);
    assert_eq!(ov["message_stats"]["deliver_get"], 2);
    assert_eq!(ov["message_stats"]["ack"], 2);
    assert_eq!(ov["queue_totals"]["messages"], 3);
    assert_eq!(ov["object_totals"]["connections"], 1);
    assert_eq!(ov["object_totals"]["queues"], 1);

    let (s, q, _) = http(&broker, "GET", "/api/queues/%2F/q", GUEST, None).await;
    assert_eq!(s, 200);
    assert_eq!(q["name"], "q");
    assert_eq!(q["vhost"], "/");
    assert_eq!(q["messages_ready"], 3);
    assert_eq!(q["durable"], false);
    let (s, qs, _) = http(&broker, "GET", "/api/queues", GUEST, None).await;
    assert_eq!(s, 200);
    assert_eq!(qs.as_array().unwrap().len(), 1);
    let (s, _, _) = http(&broker, "GET", "/api/queues/%2F/missing", GUEST, None).await;
    assert_eq!(s, 404);

    let (_, xs, _) = http(&broker, "GET", "/api/exchanges", GUEST, None).await;
    let names: Vec<&str> = xs
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"") && names.contains(&"amq.fanout"),
        "{names:?}"
    );
    let fanout = xs
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "amq.fanout")
        .unwrap();
    assert_eq!(fanout["type"], "fanout");

    let (_, cs, _) = http(&broker, "GET", "/api/connections", GUEST, None).await;
    assert_eq!(cs[0]["user"], "guest");
    assert_eq!(cs[0]["vhost"], "/");
    assert_eq!(cs[0]["peer_host"], "127.0.0.1");

    let (_, users, _) = http(&broker, "GET", "/api/users", GUEST, None).await;
    let watcher = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "watcher")
        .unwrap();
    assert_eq!(watcher["tags"], json!(["monitoring"]));

    // Permissions: write, read back, delete.
    http(&broker, "PUT", "/api/vhosts/v2", GUEST, None).await;
    let (s, _, _) = http(
        &broker,
        "PUT",
        "/api/permissions/v2/watcher",
        GUEST,
        Some(json!({"configure": "^c", "write": "^w", "read": "^r"})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, perms, _) = http(&broker, "GET", "/api/permissions", GUEST, None).await;
    let p = perms
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["vhost"] == "v2")
        .unwrap();
    assert_eq!(
        p,
        &json!({"user": "watcher", "vhost": "v2", "configure": "^c", "write": "^w", "read": "^r"})
    );
    let (s, _, _) = http(
        &broker,
        "PUT",
        "/api/permissions/v2/watcher",
        GUEST,
        Some(json!({"configure": "(", "write": "", "read": ""})),
    )
    .await;
    assert_eq!(s, 400, "a regex that does not compile is refused");

    // /metrics: no login, valid Prometheus text, values that match the traffic.
    let (s, _, text) = http(&broker, "GET", "/metrics", None, None).await;
    assert_eq!(s, 200);
    let samples = parse_prometheus(&text);
    assert_eq!(samples["lepus_messages_published_total{vhost=\"/\"}"], 5.0);
    assert_eq!(samples["lepus_messages_delivered_total{vhost=\"/\"}"], 2.0);
    assert_eq!(samples["lepus_messages_acked_total{vhost=\"/\"}"], 2.0);
    assert_eq!(
        samples["lepus_queue_messages_ready{vhost=\"/\",queue=\"q\"}"],
        3.0
    );
    assert_eq!(samples["lepus_connections"], 1.0);
    assert!(samples["lepus_process_resident_memory_bytes"] > 0.0);

    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
}

/// Parses Prometheus text format 0.0.4 strictly: every sample's family must have been
/// declared by a `# TYPE` line before it, names and labels must be well-formed, values must be
/// numbers. Returns `name{labels}` -> value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut out = HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("a metric name after # HELP/TYPE");
            assert!(name_ok(name), "bad metric name in {line:?}");
            if kind == "TYPE" {
                let t = parts.next().expect("a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type in {line:?}"
                );
                assert!(
                    typed.insert(name.to_owned(), t.to_owned()).is_none(),
                    "TYPE twice: {name}"
                );
            } else {
                assert_eq!(kind, "HELP", "unknown comment {line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample: series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "bad name in {line:?}");
        assert!(typed.contains_key(name), "sample before its TYPE: {line:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad label set in {line:?}"));
            // k="v" pairs separated by commas; v may contain escaped quotes.
            let mut rest = inner;
            while !rest.is_empty() {
                let (k, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(name_ok(k), "bad label name in {line:?}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

/// Percent-encodes a path segment.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn channels_follow_real_traffic_in_the_rabbitmq_shape() {
    use futures::StreamExt;
    let broker = broker_with_api().await;
    let conn = connect(&broker).await;
    // Channel 1: qos 10 per consumer and 20 per channel, one consumer, 2 unacked.
    // Channel 2: confirm mode, two consumers, 3 unacked.
    let a = conn.create_channel().await.unwrap();
    let b = conn.create_channel().await.unwrap();
    a.basic_qos(10, BasicQosOptions { global: false })
        .await
        .unwrap();
    a.basic_qos(20, BasicQosOptions { global: true })
        .await
        .unwrap();
    b.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["c1", "c2", "c3"] {
        b.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let mut consumers = Vec::new();
    for (ch, q) in [(&a, "c1"), (&b, "c2"), (&b, "c3")] {
        consumers.push(
            ch.basic_consume(
                q.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap(),
        );
    }
    for (q, n) in [("c1", 2), ("c2", 2), ("c3", 1)] {
        for _ in 0..n {
            b.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    }
    // Once the client holds the deliveries, the broker counts them as unacked.
    for (c, n) in consumers.iter_mut().zip([2, 2, 1]) {
        for _ in 0..n {
            tokio::time::timeout(std::time::Duration::from_secs(5), c.next())
                .await
                .expect("a delivery within 5 s")
                .expect("consumer open")
                .expect("delivery");
        }
    }

    let (_, cs, _) = http(&broker, "GET", "/api/connections", GUEST, None).await;
    let conn_name = cs[0]["name"].as_str().unwrap().to_owned();
    let peer_port = cs[0]["peer_port"].clone();
    let (s, chs, _) = http(&broker, "GET", "/api/channels", GUEST, None).await;
    assert_eq!(s, 200);
    let chs = chs.as_array().unwrap().clone();
    assert_eq!(chs.len(), 2, "{chs:?}");
    let expect =
        |number: u16, consumers: u64, unacked: u64, prefetch: u64, global: u64, confirm: bool| {
            json!({
                "name": format!("{conn_name} ({number})"),
                "number": number,
                "connection_details": {
                    "name": conn_name,
                    "peer_host": "127.0.0.1",
                    "peer_port": peer_port,
                },
                "user": "guest",
                "vhost": "/",
                "node": "lepus@localhost",
                "consumer_count": consumers,
                "messages_unacknowledged": unacked,
                "messages_unconfirmed": 0,
                "messages_uncommitted": 0,
                "acks_uncommitted": 0,
                "prefetch_count": prefetch,
                "global_prefetch_count": global,
                "confirm": confirm,
                "transactional": false,
                "state": "running",
            })
        };
    assert_eq!(chs[0], expect(1, 1, 2, 10, 20, false));
    assert_eq!(chs[1], expect(2, 2, 3, 0, 0, true));

    // The same channels by connection and by vhost; none in another vhost.
    let path = format!("/api/connections/{}/channels", seg(&conn_name));
    let (s, by_conn, _) = http(&broker, "GET", &path, GUEST, None).await;
    assert_eq!(s, 200);
    assert_eq!(by_conn.as_array().unwrap(), &chs);
    let (_, by_vhost, _) = http(&broker, "GET", "/api/vhosts/%2F/channels", GUEST, None).await;
    assert_eq!(by_vhost.as_array().unwrap(), &chs);
    http(&broker, "PUT", "/api/vhosts/empty", GUEST, None).await;
    let (_, none, _) = http(&broker, "GET", "/api/vhosts/empty/channels", GUEST, None).await;
    assert_eq!(none, json!([]));
    let (s, _, _) = http(
        &broker,
        "GET",
        "/api/connections/nope/channels",
        GUEST,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Totals: the overview and /metrics count both channels.
    let (_, ov, _) = http(&broker, "GET", "/api/overview", GUEST, None).await;
    assert_eq!(ov["object_totals"]["channels"], 2);
    let (_, _, text) = http(&broker, "GET", "/metrics", None, None).await;
    assert_eq!(parse_prometheus(&text)["lepus_channels"], 2.0);

    // Closing channel 1 requeues its deliveries and drops it from the list.
    a.close(200, "bye".into()).await.unwrap();
    let (_, chs, _) = http(&broker, "GET", "/api/channels", GUEST, None).await;
    let numbers: Vec<&Value> = chs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["number"])
        .collect();
    assert_eq!(numbers, [&json!(2)]);
    let (_, q, _) = http(&broker, "GET", "/api/queues/%2F/c1", GUEST, None).await;
    assert_eq!(q["messages_ready"], 2);

    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
}

/// `messages_uncommitted` and `acks_uncommitted` count what a transaction buffered, until
/// `tx.commit` applies it (or `tx.rollback` drops it).
#[tokio::test]
async fn channels_count_the_work_a_transaction_holds() {
    let broker = broker_with_api().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "txq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let publish = |ch: lapin::Channel| async move {
        ch.basic_publish(
            "".into(),
            "txq".into(),
            BasicPublishOptions::default(),
            b"t",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    };
    publish(ch.clone()).await;
    ch.tx_select().await.unwrap();
    // A delivery to ack inside the transaction.
    let got = ch
        .basic_get("txq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the message published before tx.select");
    publish(ch.clone()).await;
    publish(ch.clone()).await;
    ch.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    let counts = |chs: Value| {
        let c = &chs.as_array().unwrap()[0];
        (
            c["transactional"].clone(),
            c["messages_uncommitted"].clone(),
            c["acks_uncommitted"].clone(),
            c["messages_unacknowledged"].clone(),
        )
    };
    // The publishes and the ack arrive before the next method's reply: a basic.qos round trip
    // orders them before the API request.
    ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    let (_, chs, _) = http(&broker, "GET", "/api/channels", GUEST, None).await;
    assert_eq!(counts(chs), (json!(true), json!(2), json!(1), json!(1)));
    ch.tx_commit().await.unwrap();
    let (_, chs, _) = http(&broker, "GET", "/api/channels", GUEST, None).await;
    assert_eq!(counts(chs), (json!(true), json!(0), json!(0), json!(0)));
    publish(ch.clone()).await;
    ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    let (_, chs, _) = http(&broker, "GET", "/api/channels", GUEST, None).await;
    assert_eq!(counts(chs), (json!(true), json!(1), json!(0), json!(0)));
    ch.tx_rollback().await.unwrap();
    let (_, chs, _) = http(&broker, "GET", "/api/channels", GUEST, None).await;
    assert_eq!(counts(chs), (json!(true), json!(0), json!(0), json!(0)));
    let (_, q, _) = http(&broker, "GET", "/api/queues/%2F/txq", GUEST, None).await;
    assert_eq!(
        q["messages"], 2,
        "the two committed publishes, not the rolled-back one"
    );
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
}
