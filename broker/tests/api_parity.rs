//! The management API's JSON shapes against RabbitMQ's (issue 20, "Done means" 4): the same
//! scenario is played on Lepus and on RabbitMQ with `rabbitmq_management` (a vhost, users and
//! permissions, exchanges, a queue with arguments, bindings, messages, a consumer on an open
//! connection), then every endpoint Lepus serves is called on both, and the answers compared:
//! the status codes, and for JSON bodies every key Lepus returns must exist in RabbitMQ's
//! answer with the same JSON type (objects compared recursively, each array element against
//! the union of RabbitMQ's elements). Lepus may leave out keys it has no data for (RabbitMQ's
//! Erlang process figures, garbage collection, ...); it may not add, rename or retype one,
//! except for the deliberate differences in [`DELIBERATE`].
//!
//! Runs when `LEPUS_TEST_RABBITMQ_API` (RabbitMQ's management API) and `LEPUS_TEST_AMQP_URL`
//! (its AMQP port) are set, as `.ci/run` sets them; without them it says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::options::{BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};

mod common;
use common::http::{broker_with_api, rabbitmq_api, seg, Api};

/// Where Lepus differs on purpose: (endpoint template, JSON path or "status", why).
const DELIBERATE: &[(&str, &str, &str)] = &[
    (
        "GET /api/nodes",
        "[].lepus",
        "Lepus's own node figures (memory budget, store fsyncs), under one key of its own",
    ),
    ("GET /api/nodes/{node}", ".lepus", "as above"),
    (
        "GET /api/users (as a monitoring user)",
        "status",
        "refusals are 403 (RabbitMQ 3.10 answers 401 with a new login challenge)",
    ),
    (
        "DELETE /api/queues/{vhost}/{queue} (as a monitoring user)",
        "status",
        "refusals are 403 where RabbitMQ says 401",
    ),
];

/// Labels of JSON types, numbers as one type (RabbitMQ writes rates as floats).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The union of the shapes of several values: the types seen, and for objects the union of
/// each key, for arrays the union of the elements.
#[derive(Debug, Default)]
struct Shape {
    kinds: BTreeSet<&'static str>,
    keys: BTreeMap<String, Shape>,
    elements: Option<Box<Shape>>,
}

impl Shape {
    fn add(&mut self, v: &Value) {
        self.kinds.insert(kind(v));
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    self.keys.entry(k.clone()).or_default().add(v);
                }
            }
            Value::Array(items) => {
                let e = self.elements.get_or_insert_with(Default::default);
                for i in items {
                    e.add(i);
                }
            }
            _ => {}
        }
    }
}

/// Differences of `lepus` from `rabbit` (paths like `.message_stats.publish_details.rate`).
fn compare(lepus: &Value, rabbit: &Shape, path: &str, out: &mut Vec<String>) {
    let k = kind(lepus);
    if !rabbit.kinds.contains(k) {
        // `null` where RabbitMQ has a value (or the reverse) is a different type too.
        out.push(format!("{path}: Lepus {k}, RabbitMQ {:?}", rabbit.kinds));
        return;
    }
    match lepus {
        Value::Object(map) => {
            for (key, v) in map {
                let p = format!("{path}.{key}");
                match rabbit.keys.get(key) {
                    Some(s) => compare(v, s, &p, out),
                    None => out.push(format!("{p}: not in RabbitMQ's answer")),
                }
            }
        }
        Value::Array(items) => match &rabbit.elements {
            Some(e) if !e.kinds.is_empty() => {
                for i in items {
                    compare(i, e, &format!("{path}[]"), out);
                }
            }
            _ if items.is_empty() => {}
            _ => out.push(format!(
                "{path}: RabbitMQ's array is empty, nothing to compare with"
            )),
        },
        _ => {}
    }
}

/// The same setup on either broker; returns the open AMQP connection (kept for the
/// connection, channel and consumer endpoints) and the names used.
struct Scenario {
    vhost: String,
    queue: String,
    exchange: String,
    user: String,
    /// Kept open: lapin closes a channel, and cancels a consumer, when it is dropped.
    _amqp: (Connection, lapin::Channel, lapin::Channel, lapin::Consumer),
}

async fn scenario(api: &Api, amqp_base: &str, id: &str) -> Scenario {
    let vhost = format!("parity-{id}");
    let queue = format!("parity-q-{id}");
    let exchange = format!("parity-x-{id}");
    let user = format!("parity-mon-{id}");
    let v = seg(&vhost);
    api.ok("PUT", &format!("/api/vhosts/{v}"), None).await;
    api.set_permissions(&vhost, "guest", [".*", ".*", ".*"])
        .await;
    api.add_user_in(&vhost, &user, "pw", "monitoring", ["", "", ".*"])
        .await;
    api.ok(
        "PUT",
        &format!("/api/exchanges/{v}/{exchange}"),
        Some(json!({"type": "topic", "durable": true, "arguments": {"alternate-exchange": "amq.fanout"}})),
    )
    .await;
    // The queue through AMQP (with arguments), its consumer on a connection kept open.
    let conn = Connection::connect(&format!("{amqp_base}/{v}"), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1000));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(600_000));
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .unwrap();
    api.ok(
        "POST",
        &format!("/api/bindings/{v}/e/{exchange}/q/{queue}"),
        Some(json!({"routing_key": "parity.#", "arguments": {}})),
    )
    .await;
    // Published on a channel that stays open: RabbitMQ's statistics of a short-lived
    // channel (such as its API's own publish) may never reach the queue's counters.
    for i in 0..3u8 {
        ch.basic_publish(
            exchange.as_str().into(),
            "parity.x".into(),
            lapin::options::BasicPublishOptions::default(),
            b"hello",
            lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_priority(i),
        )
        .await
        .unwrap();
    }
    let ch2 = conn.create_channel().await.unwrap();
    ch2.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let consumer = common::amqp::consume_tagged(&ch2, &queue, "parity-consumer", false).await;
    Scenario {
        vhost,
        queue,
        exchange,
        user,
        _amqp: (conn, ch, ch2, consumer),
    }
}

/// Waits until RabbitMQ's statistics show the scenario's connection, channels and consumer
/// (it collects them every 5 s).
async fn settle(api: &Api, s: &Scenario) {
    let mut last = String::new();
    for _ in 0..60 {
        let conns = api.get("/api/connections").await;
        let chans = api.get("/api/channels").await;
        let queue = api
            .get(&format!("/api/queues/{}/{}", seg(&s.vhost), s.queue))
            .await;
        let ours = |list: &Value| {
            list.as_array()
                .unwrap()
                .iter()
                .filter(|c| c["vhost"] == s.vhost.as_str())
                .count()
        };
        if ours(&conns) >= 1
            && ours(&chans) >= 2
            && queue["consumers"] == 1
            && queue["message_stats"].get("publish").is_some()
            && queue["message_stats"].get("deliver_get").is_some()
        {
            return;
        }
        last = format!(
            "connections {}, channels {}, queue {queue}",
            ours(&conns),
            ours(&chans)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the statistics never showed the scenario: {last}");
}

/// The values the endpoint templates need, per broker.
fn fill(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

async fn vars(api: &Api, s: &Scenario, amqp_port: u16) -> BTreeMap<&'static str, String> {
    let overview = api.get("/api/overview").await;
    let conns = api.get("/api/connections").await;
    let conn = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vhost"] == s.vhost.as_str())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let bindings = api
        .get(&format!(
            "/api/bindings/{}/e/{}/q/{}",
            seg(&s.vhost),
            s.exchange,
            s.queue
        ))
        .await;
    let props = bindings[0]["properties_key"].as_str().unwrap().to_owned();
    BTreeMap::from([
        ("vhost", seg(&s.vhost)),
        ("queue", s.queue.clone()),
        ("exchange", s.exchange.clone()),
        ("user", s.user.clone()),
        ("conn", seg(&conn)),
        ("props", seg(&props)),
        ("node", seg(overview["node"].as_str().unwrap())),
        ("port", amqp_port.to_string()),
        ("other_vhost", seg("parity-not-there")),
    ])
}

/// Every endpoint Lepus serves with a JSON answer: (method, path template, body, as user).
fn endpoints() -> Vec<(
    &'static str,
    &'static str,
    Option<Value>,
    Option<&'static str>,
)> {
    let mut list: Vec<(&str, &str, Option<Value>, Option<&str>)> = [
        "/api/overview",
        "/api/whoami",
        "/api/vhosts",
        "/api/vhosts/{vhost}",
        "/api/vhosts/{vhost}/permissions",
        "/api/vhosts/{vhost}/channels",
        "/api/users",
        "/api/users/{user}",
        "/api/users/{user}/permissions",
        "/api/permissions",
        "/api/permissions/{vhost}/{user}",
        "/api/queues",
        "/api/queues/{vhost}",
        "/api/queues/{vhost}/{queue}",
        "/api/queues/{vhost}/{queue}/bindings",
        "/api/exchanges",
        "/api/exchanges/{vhost}",
        "/api/exchanges/{vhost}/{exchange}",
        "/api/exchanges/{vhost}/amq.default",
        "/api/exchanges/{vhost}/{exchange}/bindings/source",
        "/api/exchanges/{vhost}/{exchange}/bindings/destination",
        "/api/bindings",
        "/api/bindings/{vhost}",
        "/api/bindings/{vhost}/e/{exchange}/q/{queue}",
        "/api/bindings/{vhost}/e/{exchange}/q/{queue}/{props}",
        "/api/connections",
        "/api/connections/{conn}/channels",
        "/api/channels",
        "/api/consumers",
        "/api/nodes",
        "/api/nodes/{node}",
        "/api/definitions",
        "/api/definitions/{vhost}",
        "/api/health/checks/alarms",
        "/api/health/checks/local-alarms",
        "/api/health/checks/port-listener/{port}",
        "/api/health/checks/port-listener/1",
        "/api/health/checks/port-listener/not-a-port",
        "/api/health/checks/protocol-listener/amqp",
        "/api/health/checks/virtual-hosts",
        "/api/health/checks/node-is-quorum-critical",
        "/api/health/checks/node-is-mirror-sync-critical",
        "/api/queues/{vhost}/no-such-queue",
        "/api/exchanges/{vhost}/no-such-exchange",
        "/api/users/no-such-user",
        "/api/vhosts/{vhost}/no-such/path",
    ]
    .into_iter()
    .map(|p| ("GET", p, None, None))
    .collect();
    // Rates with their samples, as the dashboard asks for them.
    list.push((
        "GET",
        "/api/queues/{vhost}/{queue}?msg_rates_age=60&msg_rates_incr=5&lengths_age=60&lengths_incr=5",
        None,
        None,
    ));
    list.push((
        "GET",
        "/api/overview?msg_rates_age=60&msg_rates_incr=5&lengths_age=60&lengths_incr=5",
        None,
        None,
    ));
    list.push((
        "POST",
        "/api/queues/{vhost}/{queue}/get",
        Some(json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000})),
        None,
    ));
    list.push((
        "POST",
        "/api/exchanges/{vhost}/{exchange}/publish",
        Some(json!({"properties": {}, "routing_key": "nowhere", "payload": "x", "payload_encoding": "string"})),
        None,
    ));
    list.push((
        "PUT",
        "/api/queues/{vhost}/{queue}",
        Some(json!({"durable": false})),
        None,
    ));
    // What a monitoring user may not do, and may see.
    list.push(("GET", "/api/users", None, Some("monitoring")));
    list.push(("GET", "/api/overview", None, Some("monitoring")));
    list.push(("GET", "/api/queues/{vhost}", None, Some("monitoring")));
    list.push((
        "DELETE",
        "/api/queues/{vhost}/{queue}",
        None,
        Some("monitoring"),
    ));
    list
}

/// Whether a difference is listed in [`DELIBERATE`].
fn deliberate(endpoint: &str, what: &str) -> bool {
    DELIBERATE
        .iter()
        .any(|(e, p, _)| *e == endpoint && (what == *p || what.starts_with(&format!("{p}."))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_lepus_serves_has_rabbitmq_shapes() {
    let (Some(rabbit), Ok(rabbit_amqp)) = (rabbitmq_api(), std::env::var("LEPUS_TEST_AMQP_URL"))
    else {
        eprintln!("LEPUS_TEST_RABBITMQ_API or LEPUS_TEST_AMQP_URL unset: nothing to compare with");
        return;
    };
    let id = format!("{}", std::process::id());
    let (broker, lepus) = broker_with_api().await;
    // `amqp://guest:guest@host:port/%2f` without its vhost.
    let rabbit_base = rabbit_amqp
        .rsplit_once('/')
        .map_or(rabbit_amqp.as_str(), |(b, _)| b)
        .to_owned();
    let rabbit_port: u16 = rabbit_base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let lepus_base = format!("amqp://guest:guest@{}", broker.local_addr());
    let on_rabbit = scenario(&rabbit, &rabbit_base, &id).await;
    let on_lepus = scenario(&lepus, &lepus_base, &id).await;
    settle(&rabbit, &on_rabbit).await;
    settle(&lepus, &on_lepus).await;
    // Let both take a rate sample after the traffic.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rabbit_vars = vars(&rabbit, &on_rabbit, rabbit_port).await;
    let lepus_vars = vars(&lepus, &on_lepus, broker.local_addr().port()).await;

    let mut differences = Vec::new();
    let mut compared = 0;
    for (method, template, body, as_user) in endpoints() {
        let label = match as_user {
            Some(tag) => format!("{method} {template} (as a {tag} user)"),
            None => format!("{method} {template}"),
        };
        let label_base = label.split('?').next().unwrap().to_owned();
        let (r_api, l_api) = match as_user {
            Some(_) => (
                rabbit.as_user(&on_rabbit.user, "pw"),
                lepus.as_user(&on_lepus.user, "pw"),
            ),
            None => (rabbit.clone(), lepus.clone()),
        };
        let r = r_api
            .call(method, &fill(template, &rabbit_vars), body.clone())
            .await;
        let l = l_api
            .call(method, &fill(template, &lepus_vars), body.clone())
            .await;
        if r.status != l.status {
            if !deliberate(&label_base, "status") {
                differences.push(format!(
                    "{label}: status Lepus {} RabbitMQ {} ({} / {})",
                    l.status, r.status, l.text, r.text
                ));
            }
            continue;
        }
        if l.text.trim().is_empty() && r.text.trim().is_empty() {
            compared += 1;
            continue;
        }
        let mut shape = Shape::default();
        shape.add(&r.json);
        let mut found = Vec::new();
        compare(&l.json, &shape, "", &mut found);
        for f in found {
            let what = f.split(':').next().unwrap().to_owned();
            if !deliberate(&label_base, &what) {
                differences.push(format!("{label}: {f}"));
            }
        }
        compared += 1;
    }
    assert!(compared >= 50, "only {compared} endpoints compared");
    assert!(
        differences.is_empty(),
        "Lepus's management API differs from RabbitMQ's:\n{}",
        differences.join("\n")
    );

    for api in [&rabbit, &lepus] {
        let s = if std::ptr::eq(api, &rabbit) {
            &on_rabbit
        } else {
            &on_lepus
        };
        api.ok("DELETE", &format!("/api/vhosts/{}", seg(&s.vhost)), None)
            .await;
        api.ok("DELETE", &format!("/api/users/{}", s.user), None)
            .await;
    }
    drop((on_rabbit, on_lepus));
    broker.shutdown().await;
}

#[test]
fn the_comparison_finds_extra_keys_and_other_types() {
    let mut shape = Shape::default();
    shape.add(&json!([{"a": 1, "b": {"c": "x"}, "l": [{"k": true}]}, {"a": 2.5, "d": null}]));
    let mut out = Vec::new();
    compare(
        &json!([{"a": 3, "b": {"c": 7}, "e": 1, "l": [{"k": false, "z": 0}], "d": null}]),
        &shape,
        "",
        &mut out,
    );
    assert_eq!(
        out,
        [
            "[].b.c: Lepus number, RabbitMQ {\"string\"}",
            "[].e: not in RabbitMQ's answer",
            "[].l[].z: not in RabbitMQ's answer",
        ]
    );
    assert!(deliberate("GET /api/nodes/{node}", ".lepus.store"));
    assert!(!deliberate("GET /api/nodes/{node}", ".mem_used"));
}
