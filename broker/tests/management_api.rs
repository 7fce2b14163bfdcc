//! The management HTTP API and `/metrics` checked with a real HTTP client (ureq) against an
//! in-process broker: authentication and tags, RabbitMQ's JSON shapes, counters that follow
//! real AMQP traffic, and a strict parse of the Prometheus text format.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use base64::Engine;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::{Connection, ConnectionProperties};
use lepus_broker::{Broker, BrokerHandle};
use serde_json::{json, Value};

mod common;
use common::amqp::{consume_tagged, declare_plain_queue, publish_to_queue};
use common::http::seg;
use common::prometheus::parse_prometheus;

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
            ("GET", _) => with_auth(agent.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(agent.delete(&url), &auth).call(),
            ("PUT", body) => with_auth(agent.put(&url), &auth).send_json(body.unwrap_or(json!({}))),
            _ => unreachable!("test uses GET, PUT, DELETE"),
        };
        let mut resp = res.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = common::http::body_text(&mut resp).expect("read the whole answer");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    })
    .await
    .unwrap()
}

/// `request` with the `Authorization` header `auth`, if any.
fn with_auth<B>(
    request: ureq::RequestBuilder<B>,
    auth: &Option<String>,
) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => request.header("Authorization", a),
        None => request,
    }
}

/// Who a request logs in as (user, password); `None`: no credentials.
type Login = Option<(&'static str, &'static str)>;

const GUEST: Login = Some(("guest", "guest"));
const WRONG_PASSWORD: Login = Some(("guest", "nope"));
const WATCHER: Login = Some(("watcher", "pw"));

/// A lapin connection to `broker` as guest.
async fn connect(broker: &BrokerHandle) -> Connection {
    common::amqp::connect_url(&broker.amqp_url()).await
}

/// An in-process broker with its management API, and a lapin connection to it as guest.
async fn broker_and_connection() -> (BrokerHandle, Connection) {
    let broker = common::http::broker_with_management().await;
    let conn = connect(&broker).await;
    (broker, conn)
}

/// Closes `conn`, then shuts `broker` down.
async fn close_and_shut_down(broker: BrokerHandle, conn: Connection) {
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn api_shapes_auth_and_counters() {
    let broker = common::http::broker_with_management().await;

    // Authentication: none or wrong -> 401 with a challenge; right -> 200.
    let (s, body, _) = http(&broker, "GET", "/api/overview", None, None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "not_authorised");
    let (s, _, _) = http(&broker, "GET", "/api/overview", WRONG_PASSWORD, None).await;
    assert_eq!(s, 401);

    // A user without tags cannot read; monitoring can read but not write.
    let no_tags = json!({"password": "pw", "tags": ""});
    let (s, _, _) = http(&broker, "PUT", "/api/users/watcher", GUEST, Some(no_tags)).await;
    assert_eq!(s, 201);
    let (s, _, _) = http(&broker, "GET", "/api/queues", WATCHER, None).await;
    assert_eq!(s, 403);
    let monitoring = json!({"tags": "monitoring"});
    http(
        &broker,
        "PUT",
        "/api/users/watcher",
        GUEST,
        Some(monitoring),
    )
    .await;
    let (s, _, _) = http(&broker, "GET", "/api/queues", WATCHER, None).await;
    assert_eq!(s, 200);
    let (s, _, _) = http(&broker, "PUT", "/api/vhosts/x", WATCHER, None).await;
    assert_eq!(s, 403);

    // AMQP traffic: 5 published to q, 2 fetched and acked.
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_plain_queue(&ch, "q").await;
    for _ in 0..5 {
        publish_to_queue(&ch, "q", b"x").await.await.unwrap();
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
    common::amqp::passive_queue(&ch, "q").await.unwrap();

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
    let fanout = find(&xs, "name", "amq.fanout");
    assert_eq!(fanout["type"], "fanout");

    let (_, cs, _) = http(&broker, "GET", "/api/connections", GUEST, None).await;
    assert_eq!(cs[0]["user"], "guest");
    assert_eq!(cs[0]["vhost"], "/");
    assert_eq!(cs[0]["peer_host"], "127.0.0.1");

    let (_, users, _) = http(&broker, "GET", "/api/users", GUEST, None).await;
    let watcher = find(&users, "name", "watcher");
    assert_eq!(watcher["tags"], json!(["monitoring"]));

    // Permissions: write, read back, delete.
    http(&broker, "PUT", "/api/vhosts/v2", GUEST, None).await;
    let perms_path = "/api/permissions/v2/watcher";
    let perms = json!({"configure": "^c", "write": "^w", "read": "^r"});
    let (s, _, _) = http(&broker, "PUT", perms_path, GUEST, Some(perms)).await;
    assert_eq!(s, 201);
    let (_, perms, _) = http(&broker, "GET", "/api/permissions", GUEST, None).await;
    let p = find(&perms, "vhost", "v2");
    assert_eq!(
        p,
        &json!({"user": "watcher", "vhost": "v2", "configure": "^c", "write": "^w", "read": "^r"})
    );
    let bad_regex = json!({"configure": "(", "write": "", "read": ""});
    let (s, _, _) = http(&broker, "PUT", perms_path, GUEST, Some(bad_regex)).await;
    assert_eq!(s, 400, "a regex that does not compile is refused");

    // /metrics: no login, valid Prometheus text, totals that match the traffic.
    let samples = scrape(&broker, "/metrics", None).await;
    // RabbitMQ's names (issue 20): the Grafana dashboards and alert rules read these.
    assert_eq!(
        samples["rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"],
        5.0
    );
    let classic = "{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}";
    assert_eq!(
        samples[&format!("rabbitmq_global_messages_delivered_total{classic}")],
        2.0
    );
    assert_eq!(
        samples[&format!("rabbitmq_global_messages_acknowledged_total{classic}")],
        2.0
    );
    assert_eq!(samples["rabbitmq_queue_messages_ready"], 3.0);
    assert_eq!(samples["rabbitmq_queues"], 1.0);
    assert_eq!(samples["rabbitmq_connections"], 1.0);
    assert!(samples["rabbitmq_process_resident_memory_bytes"] > 0.0);
    // The same per vhost and per queue at /metrics/per-object, for an administrator.
    let samples = scrape(&broker, "/metrics/per-object", GUEST).await;
    assert_eq!(
        samples["rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"q\"}"],
        3.0
    );
    assert_eq!(
        samples["rabbitmq_queue_messages_published_total{vhost=\"/\",queue=\"q\"}"],
        5.0
    );

    close_and_shut_down(broker, conn).await;
}

#[tokio::test]
async fn channels_follow_real_traffic_in_the_rabbitmq_shape() {
    use futures::StreamExt;
    let (broker, conn) = broker_and_connection().await;
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
        declare_plain_queue(&b, q).await;
    }
    let mut consumers = Vec::new();
    for (ch, q) in [(&a, "c1"), (&b, "c2"), (&b, "c3")] {
        consumers.push(consume_tagged(ch, q, "", false).await);
    }
    for (q, n) in [("c1", 2), ("c2", 2), ("c3", 1)] {
        for _ in 0..n {
            publish_to_queue(&b, q, b"x").await.await.unwrap();
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
    let samples = scrape(&broker, "/metrics", None).await;
    assert_eq!(samples["rabbitmq_channels"], 2.0);

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

    close_and_shut_down(broker, conn).await;
}

/// `messages_uncommitted` and `acks_uncommitted` count what a transaction buffered, until
/// `tx.commit` applies it (or `tx.rollback` drops it).
#[tokio::test]
async fn channels_count_the_work_a_transaction_holds() {
    let (broker, conn) = broker_and_connection().await;
    let ch = conn.create_channel().await.unwrap();
    declare_plain_queue(&ch, "txq").await;
    publish_to_queue(&ch, "txq", b"t").await;
    ch.tx_select().await.unwrap();
    // A delivery to ack inside the transaction.
    let got = ch
        .basic_get("txq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the message published before tx.select");
    publish_to_queue(&ch, "txq", b"t").await;
    publish_to_queue(&ch, "txq", b"t").await;
    ch.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    // The channel's (transactional, messages_uncommitted, acks_uncommitted,
    // messages_unacknowledged) as the API shows them.
    let counts = || {
        let broker = &broker;
        async move {
            let (_, chs, _) = http(broker, "GET", "/api/channels", GUEST, None).await;
            let c = &chs.as_array().unwrap()[0];
            (
                c["transactional"].clone(),
                c["messages_uncommitted"].clone(),
                c["acks_uncommitted"].clone(),
                c["messages_unacknowledged"].clone(),
            )
        }
    };
    // The publishes and the ack arrive before the next method's reply: a basic.qos round trip
    // orders them before the API request.
    ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    assert_eq!(counts().await, (json!(true), json!(2), json!(1), json!(1)));
    ch.tx_commit().await.unwrap();
    assert_eq!(counts().await, (json!(true), json!(0), json!(0), json!(0)));
    publish_to_queue(&ch, "txq", b"t").await;
    ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    assert_eq!(counts().await, (json!(true), json!(1), json!(0), json!(0)));
    ch.tx_rollback().await.unwrap();
    assert_eq!(counts().await, (json!(true), json!(0), json!(0), json!(0)));
    let (_, q, _) = http(&broker, "GET", "/api/queues/%2F/txq", GUEST, None).await;
    assert_eq!(
        q["messages"], 2,
        "the two committed publishes, not the rolled-back one"
    );
    close_and_shut_down(broker, conn).await;
}

/// The samples at `path` (`/metrics` or `/metrics/per-object`), which must answer 200.
async fn scrape(broker: &BrokerHandle, path: &str, login: Login) -> HashMap<String, f64> {
    let (s, _, text) = http(broker, "GET", path, login, None).await;
    assert_eq!(s, 200, "GET {path}: {text}");
    parse_prometheus(&text)
}

/// The item of JSON list `list` whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("a list, got {list}"))
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list}"))
}

/// Names in a JSON list: `key` of each item, sorted.
fn names_of(list: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list, got {list}"))
        .iter()
        .map(|x| {
            let name = match &x[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match x["vhost"].as_str() {
                Some(v) => format!("{name}@{v}"),
                None => name,
            }
        })
        .collect();
    out.sort();
    out
}

/// A lapin connection as `user` (password `pw`) to `vhost`.
async fn connect_as(broker: &BrokerHandle, user: &str, vhost: &str) -> Connection {
    let url = format!("amqp://{user}:pw@{}/{}", broker.local_addr(), seg(vhost));
    Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{user} connects to {vhost}: {e}"))
}

/// Issue 13 item 6: each management user tag sees what RabbitMQ 3.10's management plugin
/// shows it (its "management user tags" documentation, and `rabbitmq_management` 3.10.8 on
/// the same scenario: the expectations below are what it answered, 401s aside, which Lepus
/// answers as 403), and `/metrics` names nothing. Before the fix a `management` user with no
/// permissions read every vhost's queues, connections, users and permissions.
///
/// The scenario: vhosts `/`, `va`, `vb`; `mgmt` (management) and `pol` (policymaker) with
/// permissions in `va`, `mon` (monitoring) with permissions in `vb`, `mgmt0` (management, no
/// permissions), `notag` (no tag); one AMQP connection each for guest (`/`), mgmt and pol
/// (`va`), mon (`vb`), each with a queue; mgmt and mon consume.
#[tokio::test]
async fn each_user_tag_sees_what_rabbitmq_shows_it() {
    let broker = common::http::broker_with_management().await;
    for v in ["va", "vb"] {
        let (s, _, _) = http(&broker, "PUT", &format!("/api/vhosts/{v}"), GUEST, None).await;
        assert_eq!(s, 201);
    }
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    for (user, tags, vhost) in [
        ("mgmt", "management", Some("va")),
        ("pol", "policymaker", Some("va")),
        ("mon", "monitoring", Some("vb")),
        ("mgmt0", "management", None),
        ("notag", "", Some("va")),
    ] {
        let body = json!({"password": "pw", "tags": tags});
        let (s, _, _) = http(
            &broker,
            "PUT",
            &format!("/api/users/{user}"),
            GUEST,
            Some(body),
        )
        .await;
        assert_eq!(s, 201);
        if let Some(v) = vhost {
            let path = format!("/api/permissions/{v}/{user}");
            let (s, _, _) = http(&broker, "PUT", &path, GUEST, Some(all.clone())).await;
            assert_eq!(s, 201);
        }
    }
    let mut amqp = vec![];
    for (conn, queue, consume) in [
        (None, "q-root", false),
        (Some(("mgmt", "va")), "q-a", true),
        (Some(("pol", "va")), "q-pol", false),
        (Some(("mon", "vb")), "q-b", true),
    ] {
        let c = match conn {
            Some((user, vhost)) => connect_as(&broker, user, vhost).await,
            None => connect(&broker).await,
        };
        let ch = c.create_channel().await.unwrap();
        declare_plain_queue(&ch, queue).await;
        publish_to_queue(&ch, queue, b"m").await;
        // Kept alive until the end: lapin cancels a consumer it drops.
        let consumer = if consume {
            Some(consume_tagged(&ch, queue, &format!("ctag-{queue}"), false).await)
        } else {
            None
        };
        // A round trip: the publish is routed before the API is asked.
        ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
        amqp.push((c, ch, consumer));
    }
    let conn_name = |user: &'static str| {
        let broker = &broker;
        async move {
            let (_, cs, _) = http(broker, "GET", "/api/connections", GUEST, None).await;
            cs.as_array()
                .unwrap()
                .iter()
                .find(|c| c["user"] == user)
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("a connection of {user}"))
        }
    };
    let (guest_c, mgmt_c) = (conn_name("guest").await, conn_name("mgmt").await);

    const MGMT: Option<(&str, &str)> = Some(("mgmt", "pw"));
    const POL: Option<(&str, &str)> = Some(("pol", "pw"));
    const MON: Option<(&str, &str)> = Some(("mon", "pw"));
    const MGMT0: Option<(&str, &str)> = Some(("mgmt0", "pw"));
    const NOTAG: Option<(&str, &str)> = Some(("notag", "pw"));
    let get = |path: String, who: Option<(&'static str, &'static str)>| {
        let broker = &broker;
        async move { http(broker, "GET", &path, who, None).await }
    };
    // (path, user, expected status, expected names under `key` for a 200 list)
    let list = |path: &str, who, key: &'static str| {
        let get = &get;
        let path = path.to_owned();
        async move {
            let (s, body, text) = get(path.clone(), who).await;
            assert_eq!(s, 200, "GET {path} as {who:?}: {text}");
            names_of(&body, key)
        }
    };
    let status = |path: &str, who| {
        let get = &get;
        let path = path.to_owned();
        async move { get(path, who).await.0 }
    };
    let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    // Who may use the API at all.
    assert_eq!(status("/api/overview", NOTAG).await, 403);
    assert_eq!(status("/api/overview", None).await, 401);
    assert_eq!(status("/api/overview", Some(("mgmt", "wrong"))).await, 401);

    // Vhosts: management users list those they have permissions in; monitoring all of them.
    assert_eq!(list("/api/vhosts", MGMT, "name").await, v(&["va"]));
    assert_eq!(
        list("/api/vhosts", GUEST, "name").await,
        v(&["/", "va", "vb"])
    );
    assert_eq!(
        list("/api/vhosts", MON, "name").await,
        v(&["/", "va", "vb"])
    );
    assert_eq!(list("/api/vhosts", POL, "name").await, v(&["va"]));
    assert!(list("/api/vhosts", MGMT0, "name").await.is_empty());
    for (who, name) in [(MGMT, "mgmt"), (POL, "pol"), (MON, "mon"), (MGMT0, "mgmt0")] {
        let (s, me, _) = get("/api/whoami".into(), who).await;
        assert_eq!((s, me["name"].as_str()), (200, Some(name)));
    }

    // Users, permissions and vhost administration: administrator only.
    for path in [
        "/api/users",
        "/api/users/guest",
        "/api/users/mgmt",
        "/api/users/mgmt/permissions",
        "/api/permissions",
        "/api/permissions/va/mgmt",
        "/api/vhosts/va/permissions",
        "/api/vhosts/va",
    ] {
        assert_eq!(status(path, GUEST).await, 200, "{path}");
        for who in [MON, MGMT, POL, MGMT0] {
            assert_eq!(status(path, who).await, 403, "{path} as {who:?}");
        }
    }

    // The node and the detailed metrics: monitoring and administrators only.
    for path in [
        "/api/nodes",
        "/api/nodes/lepus@localhost",
        "/metrics/detailed",
    ] {
        for who in [GUEST, MON] {
            assert_eq!(status(path, who).await, 200, "{path} as {who:?}");
        }
        for who in [MGMT, POL, MGMT0] {
            assert_eq!(status(path, who).await, 403, "{path} as {who:?}");
        }
    }

    // Queues, exchanges, bindings: in the vhosts a user has permissions in, whatever its tag;
    // administrators everywhere.
    let queues = list("/api/queues", GUEST, "name").await;
    assert_eq!(queues, v(&["q-a@va", "q-b@vb", "q-pol@va", "q-root@/"]));
    for (path, who, expected) in [
        ("/api/queues", MON, &["q-b@vb"][..]),
        ("/api/queues", MGMT, &["q-a@va", "q-pol@va"]),
        ("/api/queues", POL, &["q-a@va", "q-pol@va"]),
        ("/api/queues", MGMT0, &[]),
        ("/api/queues/va", MGMT, &["q-a@va", "q-pol@va"]),
        ("/api/queues/vb", MON, &["q-b@vb"]),
    ] {
        assert_eq!(
            list(path, who, "name").await,
            v(expected),
            "{path} as {who:?}"
        );
    }
    for kind in ["queues", "exchanges", "bindings"] {
        for (path, who) in [
            (format!("/api/{kind}/vb"), MGMT),
            (format!("/api/{kind}/va"), MON),
            (format!("/api/{kind}/va"), MGMT0),
            (format!("/api/{kind}/%2F"), MGMT),
        ] {
            assert_eq!(status(&path, who).await, 403, "{path} as {who:?}");
        }
        let seen: Vec<String> = list(&format!("/api/{kind}"), MGMT, "name").await;
        assert!(seen.iter().all(|n| n.ends_with("@va")), "{kind}: {seen:?}");
        assert!(!seen.is_empty(), "{kind}");
        let seen: Vec<String> = list(&format!("/api/{kind}"), MON, "name").await;
        assert!(seen.iter().all(|n| n.ends_with("@vb")), "{kind}: {seen:?}");
    }
    let (s, q, _) = get("/api/queues/va/q-a".into(), MGMT).await;
    assert_eq!((s, q["name"].as_str()), (200, Some("q-a")));
    // A vhost one may not enter answers the same whether the vhost or queue exists or not.
    for path in [
        "/api/queues/vb/q-b",
        "/api/queues/vb/missing",
        "/api/queues/nope/x",
        "/api/queues/nope",
    ] {
        assert_eq!(status(path, MGMT).await, 403, "{path}");
    }
    assert_eq!(status("/api/queues/va/missing", MGMT).await, 404);
    assert_eq!(status("/api/queues/nope", GUEST).await, 404);

    // Connections, channels, consumers: one's own; everyone's for monitoring.
    let mine = |xs: Vec<String>| {
        xs.into_iter()
            .map(|n| n.split('@').nth(1).unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list("/api/connections", GUEST, "name").await.len(), 4);
    assert_eq!(list("/api/connections", MON, "name").await.len(), 4);
    assert_eq!(
        mine(list("/api/connections", MGMT, "name").await),
        v(&["va"])
    );
    let (_, cs, _) = get("/api/connections".into(), MGMT).await;
    assert_eq!(cs[0]["name"], mgmt_c.as_str());
    assert!(list("/api/connections", MGMT0, "name").await.is_empty());
    assert_eq!(list("/api/channels", MON, "name").await.len(), 4);
    let (_, chs, _) = get("/api/channels".into(), MGMT).await;
    assert_eq!(names_of(&chs, "user"), v(&["mgmt@va"]));
    let (_, chs, _) = get("/api/vhosts/va/channels".into(), MGMT).await;
    assert_eq!(
        names_of(&chs, "user"),
        v(&["mgmt@va"]),
        "not pol's channel in va"
    );
    let (_, chs, _) = get("/api/vhosts/va/channels".into(), GUEST).await;
    assert_eq!(names_of(&chs, "user"), v(&["mgmt@va", "pol@va"]));
    assert_eq!(status("/api/vhosts/va/channels", MON).await, 403);
    let others = format!("/api/connections/{}/channels", seg(&guest_c));
    assert_eq!(status(&others, MON).await, 200);
    assert_eq!(
        status(&others, MGMT).await,
        404,
        "another user's connection is as missing"
    );
    let own = format!("/api/connections/{}/channels", seg(&mgmt_c));
    assert_eq!(status(&own, MGMT).await, 200);
    for (who, expected) in [
        (GUEST, &["ctag-q-a", "ctag-q-b"][..]),
        (MON, &["ctag-q-a", "ctag-q-b"]),
        (MGMT, &["ctag-q-a"]),
        (POL, &[]),
    ] {
        let tags = list("/api/consumers", who, "consumer_tag").await;
        assert_eq!(tags, v(expected), "consumers as {who:?}");
    }

    // Totals: global for monitoring; the user's vhosts and own connections for management.
    let (_, ov, _) = get("/api/overview".into(), MON).await;
    assert_eq!(
        (
            ov["object_totals"]["queues"].clone(),
            ov["object_totals"]["connections"].clone(),
            ov["object_totals"]["consumers"].clone()
        ),
        (json!(4), json!(4), json!(2))
    );
    assert_eq!(ov["message_stats"]["publish"], 4);
    let (_, ov, _) = get("/api/overview".into(), MGMT).await;
    let va_exchanges = list("/api/exchanges/va", GUEST, "name").await.len();
    assert_eq!(
        ov["object_totals"],
        json!({"queues": 2, "exchanges": va_exchanges, "connections": 1, "channels": 1})
    );
    assert_eq!(ov["message_stats"]["publish"], 2);
    assert_eq!(ov["queue_totals"]["messages"], 2);
    let (_, ov, _) = get("/api/overview".into(), MGMT0).await;
    assert_eq!(
        ov["object_totals"],
        json!({"queues": 0, "exchanges": 0, "connections": 0, "channels": 0})
    );

    // Writes: administrative ones are the administrator's; others' objects stay out of reach.
    for (method, path, body) in [
        (
            "PUT",
            "/api/users/evil".to_owned(),
            Some(json!({"password": "x", "tags": "administrator"})),
        ),
        (
            "PUT",
            "/api/permissions/vb/mgmt".to_owned(),
            Some(all.clone()),
        ),
        ("PUT", "/api/vhosts/vz".to_owned(), None),
        ("DELETE", "/api/vhosts/vb".to_owned(), None),
        ("DELETE", "/api/users/mon".to_owned(), None),
        ("DELETE", "/api/permissions/vb/mon".to_owned(), None),
        ("DELETE", "/api/queues/vb/q-b".to_owned(), None),
        ("DELETE", "/api/queues/vb/q-b/contents".to_owned(), None),
        (
            "DELETE",
            format!("/api/connections/{}", seg(&guest_c)),
            None,
        ),
    ] {
        let (s, _, text) = http(&broker, method, &path, MGMT, body).await;
        assert!(s == 403 || s == 404, "{method} {path} as mgmt: {s} {text}");
    }
    let guest_conn = format!("/api/connections/{}", seg(&guest_c));
    let (s, _, _) = http(&broker, "DELETE", &guest_conn, MON, None).await;
    assert_eq!(
        s, 403,
        "monitoring sees others' connections but may not close them"
    );
    let (s, _, _) = http(&broker, "DELETE", "/api/queues/va/q-a/contents", MON, None).await;
    assert_eq!(s, 403);
    assert_eq!(status("/api/users/evil", GUEST).await, 404);
    assert_eq!(list("/api/queues/vb", GUEST, "name").await, v(&["q-b@vb"]));
    assert_eq!(list("/api/connections", GUEST, "name").await.len(), 4);
    // What management users may do in their own vhosts: purge (read permission), close their
    // own connection.
    let pol_contents = "/api/queues/va/q-pol/contents";
    let (s, _, _) = http(&broker, "DELETE", pol_contents, MGMT, None).await;
    assert_eq!(s, 204);
    let mgmt_conn = format!("/api/connections/{}", seg(&mgmt_c));
    let (s, _, _) = http(&broker, "DELETE", &mgmt_conn, MGMT, None).await;
    assert_eq!(s, 204);

    // /metrics: totals only, no vhost or queue name; per object for monitoring only.
    let samples = scrape(&broker, "/metrics", None).await;
    for series in samples.keys() {
        for name in [
            "\"q-a\"",
            "\"q-b\"",
            "\"q-root\"",
            "\"q-pol\"",
            "\"va\"",
            "\"vb\"",
            "vhost=",
            "queue=",
        ] {
            assert!(!series.contains(name), "/metrics names {name}: {series}");
        }
    }
    assert_eq!(samples["rabbitmq_queues"], 4.0);
    assert_eq!(status("/metrics/per-object", None).await, 401);
    assert_eq!(status("/metrics/per-object", MGMT).await, 403);
    assert!(scrape(&broker, "/metrics/per-object", MON)
        .await
        .contains_key("rabbitmq_queue_consumers{vhost=\"vb\",queue=\"q-b\"}"));

    drop(amqp);
    broker.shutdown().await;
}

/// `prometheus_per_object(true)` (RabbitMQ's `return_per_object_metrics`) makes the open
/// `/metrics` per-object.
#[tokio::test]
async fn metrics_are_per_object_when_the_operator_says_so() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .management_listen("127.0.0.1:0")
        .prometheus_per_object(true)
        .start()
        .await
        .unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare_plain_queue(&ch, "named").await;
    let samples = scrape(&broker, "/metrics", None).await;
    assert_eq!(
        samples["rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"named\"}"],
        0.0
    );
    close_and_shut_down(broker, conn).await;
}

/// Sends raw bytes to the management API and returns what it answered before closing (or
/// before `wait`), as text.
async fn raw_http(broker: &BrokerHandle, request: &[u8], wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(broker.management_addr().unwrap())
        .await
        .unwrap();
    // The server may answer (and close) before it read everything: a failed write is fine.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The API still answers an administrator.
async fn assert_serving(broker: &BrokerHandle) {
    let (s, _, _) = http(broker, "GET", "/api/whoami", GUEST, None).await;
    assert_eq!(s, 200, "the management API still serves");
}

/// Issue 13, siblings of item 6: oversized bodies and headers and deeply nested JSON get a
/// clear HTTP error; the API and the broker carry on.
#[tokio::test]
async fn oversized_or_deep_requests_are_refused_cleanly() {
    let broker = common::http::broker_with_management().await;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("guest:guest")
    );
    let put = |body: &[u8]| {
        let mut req = format!(
            "PUT /api/users/big HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    let five_secs = std::time::Duration::from_secs(5);
    // A body over the 64 KiB limit: 413.
    let big = format!(r#"{{"password": "{}"}}"#, "x".repeat(100 * 1024));
    let answer = raw_http(&broker, &put(big.as_bytes()), five_secs).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    // JSON nested 20,000 deep (40 KB, under the body limit): 400, no stack overflow.
    let deep = format!(
        r#"{{"password": "x", "tags": {}{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let answer = raw_http(&broker, &put(deep.as_bytes()), five_secs).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.200}");
    assert_serving(&broker).await;
    // 32 KiB of headers: 431.
    let req = format!(
        "GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Big: {}\r\n\r\n",
        "y".repeat(32 * 1024)
    );
    let answer = raw_http(&broker, req.as_bytes(), five_secs).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert_serving(&broker).await;
    let (s, _, _) = http(&broker, "GET", "/api/users/big", GUEST, None).await;
    assert_eq!(s, 404, "neither refused request created the user");
    broker.shutdown().await;
}

/// Issue 13, siblings of item 6: clients that open connections and send nothing (or stop in
/// the middle of a request) are cut off by the header and request timeouts, no more than 256
/// are held at once, and AMQP clients are unaffected meanwhile. Waits for the 10 s header and
/// 15 s request timeouts (bounded at 60 s).
#[tokio::test]
async fn slow_or_idle_http_clients_cannot_hold_the_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = common::http::broker_with_management().await;
    let addr = broker.management_addr().unwrap();
    let limit = std::time::Duration::from_secs(60);
    // A request whose body never finishes: 408 after the request timeout.
    let slow_body = tokio::spawn({
        let auth = base64::engine::general_purpose::STANDARD.encode("guest:guest");
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "PUT /api/users/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"pass"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let started = std::time::Instant::now();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
            (
                started.elapsed(),
                String::from_utf8_lossy(&out).into_owned(),
            )
        }
    });
    // 300 connections that send nothing, one with half a request line.
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i == 0 {
            s.write_all(b"GET /api/overview HTTP/1.1\r\nHo")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    // Those over the cap of 256 are closed at once (at least the last 44 opened).
    let mut closed_at_once = 0;
    for s in idle.iter_mut().rev().take(44) {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut byte)).await
        {
            closed_at_once += 1;
        }
    }
    assert_eq!(closed_at_once, 44, "connections over the cap are closed");
    // AMQP is unaffected while the API's connections are taken.
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare_plain_queue(&ch, "still-served").await;
    // Every idle connection is closed by the server after the header timeout.
    let started = std::time::Instant::now();
    for s in &mut idle {
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(limit, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "an idle connection still open after {limit:?}");
    }
    assert!(started.elapsed() < limit);
    assert_serving(&broker).await;
    let (elapsed, answer) = slow_body.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.200}");
    assert!(elapsed < limit, "{elapsed:?}");
    close_and_shut_down(broker, conn).await;
}

/// Every route but `/metrics` asks for credentials, before anything about the object is
/// looked up: no credentials and wrong ones both get 401 with a challenge, for objects that
/// exist and objects that do not.
#[tokio::test]
async fn every_route_but_metrics_needs_a_login() {
    let (broker, conn) = broker_and_connection().await;
    let (_, cs, _) = http(&broker, "GET", "/api/connections", GUEST, None).await;
    let c = seg(cs[0]["name"].as_str().unwrap());
    let routes = [
        ("GET", "/api/overview".to_owned()),
        ("GET", "/api/whoami".to_owned()),
        ("GET", "/api/vhosts".to_owned()),
        ("GET", "/api/vhosts/%2F".to_owned()),
        ("PUT", "/api/vhosts/new".to_owned()),
        ("DELETE", "/api/vhosts/%2F".to_owned()),
        ("GET", "/api/vhosts/%2F/permissions".to_owned()),
        ("GET", "/api/vhosts/%2F/channels".to_owned()),
        ("GET", "/api/users".to_owned()),
        ("GET", "/api/users/guest".to_owned()),
        ("PUT", "/api/users/guest".to_owned()),
        ("DELETE", "/api/users/guest".to_owned()),
        ("GET", "/api/users/guest/permissions".to_owned()),
        ("GET", "/api/permissions".to_owned()),
        ("GET", "/api/permissions/%2F/guest".to_owned()),
        ("PUT", "/api/permissions/%2F/guest".to_owned()),
        ("DELETE", "/api/permissions/%2F/guest".to_owned()),
        ("GET", "/api/queues".to_owned()),
        ("GET", "/api/queues/%2F".to_owned()),
        ("GET", "/api/queues/%2F/missing".to_owned()),
        ("DELETE", "/api/queues/%2F/missing".to_owned()),
        ("DELETE", "/api/queues/%2F/missing/contents".to_owned()),
        ("GET", "/api/exchanges".to_owned()),
        ("GET", "/api/exchanges/%2F".to_owned()),
        ("GET", "/api/bindings".to_owned()),
        ("GET", "/api/bindings/%2F".to_owned()),
        ("GET", "/api/connections".to_owned()),
        ("DELETE", format!("/api/connections/{c}")),
        ("GET", format!("/api/connections/{c}/channels")),
        ("DELETE", "/api/connections/missing".to_owned()),
        ("GET", "/api/channels".to_owned()),
        ("GET", "/api/consumers".to_owned()),
        ("GET", "/metrics/per-object".to_owned()),
    ];
    for (method, path) in &routes {
        for auth in [None, Some(("guest", "wrong")), Some(("nobody", "guest"))] {
            let (s, body, text) = http(&broker, method, path, auth, Some(json!({}))).await;
            assert_eq!(s, 401, "{method} {path} with {auth:?}: {text}");
            assert_eq!(body["error"], "not_authorised");
        }
    }
    let (s, _, _) = http(&broker, "GET", "/metrics", None, None).await;
    assert_eq!(s, 200);
    // Nothing above changed anything.
    let (_, users, _) = http(&broker, "GET", "/api/users", GUEST, None).await;
    assert_eq!(names_of(&users, "name"), ["guest"]);
    let (_, cs, _) = http(&broker, "GET", "/api/connections", GUEST, None).await;
    assert_eq!(cs.as_array().unwrap().len(), 1);
    close_and_shut_down(broker, conn).await;
}

/// The dashboard's files need no login and come with their content type and the page's
/// security headers.
#[tokio::test]
async fn the_dashboard_files_come_with_their_type_and_headers() {
    let broker = common::http::broker_with_management().await;
    let base = format!("http://{}", broker.management_addr().unwrap());
    let answers = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        [
            "/",
            "/index.html",
            "/dashboard.js",
            "/dashboard.css",
            "/favicon.svg",
        ]
        .map(|path| {
            let mut resp = agent.get(&format!("{base}{path}")).call().unwrap();
            let headers: HashMap<String, String> = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            let body = resp.body_mut().read_to_string().unwrap();
            (path, resp.status().as_u16(), headers, body)
        })
    })
    .await
    .unwrap();
    for (path, status, headers, body) in answers {
        let (content_type, start) = match path {
            "/" | "/index.html" => ("text/html; charset=utf-8", "<!doctype html>"),
            "/dashboard.js" => ("text/javascript; charset=utf-8", "//"),
            "/dashboard.css" => ("text/css; charset=utf-8", "/*"),
            _ => ("image/svg+xml", "<svg"),
        };
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert!(body.to_lowercase().starts_with(start), "{path}: {body:.40}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(
            headers["content-security-policy"].starts_with("default-src 'none'; script-src 'self'"),
            "{path}: {headers:?}"
        );
    }
    broker.shutdown().await;
}

/// RabbitMQ's health checks: 200 `ok` when they pass, 503 `failed` with the reason and what
/// is missing when they do not, 400 for a port that is not a number.
#[tokio::test]
async fn health_checks_answer_in_rabbitmq_shapes() {
    let broker = common::http::broker_with_management().await;
    let amqp = broker.local_addr().port();
    let check = |what: String| {
        let broker = &broker;
        async move {
            http(
                broker,
                "GET",
                &format!("/api/health/checks/{what}"),
                GUEST,
                None,
            )
            .await
        }
    };
    for what in ["alarms", "local-alarms", "virtual-hosts"] {
        let (s, v, _) = check(what.to_owned()).await;
        assert_eq!((s, v), (200, json!({"status": "ok"})), "{what}");
    }
    for what in ["node-is-quorum-critical", "node-is-mirror-sync-critical"] {
        let (s, v, _) = check(what.to_owned()).await;
        assert_eq!(
            (s, v),
            (
                200,
                json!({"status": "ok", "reason": "single node cluster"})
            ),
            "{what}"
        );
    }
    let (s, v, _) = check(format!("port-listener/{amqp}")).await;
    assert_eq!((s, v), (200, json!({"status": "ok", "port": amqp})));
    let (s, v, _) = check("port-listener/1".to_owned()).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "No active listener");
    assert_eq!(v["missing"], 1);
    assert!(v["ports"].as_array().unwrap().contains(&json!(amqp)), "{v}");
    let (s, _, text) = check("port-listener/amqp".to_owned()).await;
    assert_eq!(s, 400, "{text}");
    let (s, v, _) = check("protocol-listener/amqp091".to_owned()).await;
    assert_eq!(
        (s, v),
        (200, json!({"status": "ok", "protocol": "amqp091"}))
    );
    let (s, v, _) = check("protocol-listener/stomp".to_owned()).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "No active listener");
    assert_eq!(v["missing"], "stomp");
    assert!(
        v["protocols"].as_array().unwrap().contains(&json!("amqp")),
        "{v}"
    );
    broker.shutdown().await;
}

/// A single-active-consumer queue as RabbitMQ 3.10's API shows it (shapes measured there): the
/// queue's `single_active_consumer_tag` (null on a plain classic queue), and each consumer's
/// `active` and `activity_status` (`single_active`, `waiting`; `up` on a plain queue).
#[tokio::test]
async fn a_single_active_consumer_shows_in_queues_and_consumers() {
    let (broker, conn) = broker_and_connection().await;
    let ch = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-single-active-consumer".into(),
        lapin::types::AMQPValue::Boolean(true),
    );
    ch.queue_declare(
        "sac".into(),
        lapin::options::QueueDeclareOptions::default(),
        args,
    )
    .await
    .unwrap();
    declare_plain_queue(&ch, "plain").await;
    let _first = consume_tagged(&ch, "sac", "first", false).await;
    let _second = consume_tagged(&ch, "sac", "second", false).await;
    let _plain = consume_tagged(&ch, "plain", "plain", false).await;
    let (s, q, _) = http(&broker, "GET", "/api/queues/%2F/sac", GUEST, None).await;
    assert_eq!(s, 200);
    assert_eq!(q["single_active_consumer_tag"], "first");
    let status_of = |list: &Value| -> Vec<(String, bool, String)> {
        let mut out: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["consumer_tag"].as_str().unwrap().to_owned(),
                    c["active"].as_bool().unwrap(),
                    c["activity_status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let sac = vec![
        ("first".to_owned(), true, "single_active".to_owned()),
        ("second".to_owned(), false, "waiting".to_owned()),
    ];
    assert_eq!(status_of(&q["consumer_details"]), sac);
    let (_, all, _) = http(&broker, "GET", "/api/consumers", GUEST, None).await;
    let mut every = sac.clone();
    every.push(("plain".to_owned(), true, "up".to_owned()));
    every.sort();
    assert_eq!(status_of(&all), every);
    let (_, plain, _) = http(&broker, "GET", "/api/queues/%2F/plain", GUEST, None).await;
    assert!(plain["single_active_consumer_tag"].is_null());
    assert!(plain
        .as_object()
        .unwrap()
        .contains_key("single_active_consumer_tag"));
    close_and_shut_down(broker, conn).await;
}
