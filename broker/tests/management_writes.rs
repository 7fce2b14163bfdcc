//! The management API's topology and message endpoints (issue 20), against an in-process
//! broker: declaring queues and exchanges as `queue.declare`/`exchange.declare` would (with
//! their arguments, equivalence and reserved names), bindings by their properties key,
//! publishing routed as `basic.publish` routes, getting messages in each ack mode, the
//! permission each needs, and the rates over time the dashboard draws.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use serde_json::{json, Value};

mod common;
use common::http::{broker_with_api, Answer, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_writes_follow_the_amqp_rules() {
    let (broker, api) = broker_with_api().await;
    // A queue with arguments: created (201), then the same again (204), then inequivalent
    // (400), and its arguments come back as declared.
    let args =
        json!({"x-max-length": 5, "x-overflow": "reject-publish", "x-queue-type": "classic"});
    let q = json!({"durable": true, "arguments": args});
    api.expect("PUT", "/api/queues/%2F/jobs", Some(q.clone()), 201)
        .await;
    api.expect("PUT", "/api/queues/%2F/jobs", Some(q), 204)
        .await;
    let a = api
        .call(
            "PUT",
            "/api/queues/%2F/jobs",
            Some(json!({"durable": true, "arguments": {"x-max-length": 6}})),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.json["reason"]
        .as_str()
        .unwrap()
        .contains("inequivalent arg 'x-max-length'"));
    assert_eq!(api.get("/api/queues/%2F/jobs").await["arguments"], args);
    // Bad arguments and reserved names are refused as AMQP refuses them.
    let refused = [
        (
            "/api/queues/%2F/q2",
            Some(json!({"arguments": {"x-message-ttl": "soon"}})),
            400,
        ),
        ("/api/queues/%2F/amq.q", None, 403),
        (
            "/api/exchanges/%2F/amq.x",
            Some(json!({"type": "direct"})),
            403,
        ),
        (
            "/api/exchanges/%2F/x",
            Some(json!({"type": "x-delayed"})),
            400,
        ),
    ];
    for (path, body, status) in refused {
        api.expect("PUT", path, body, status).await;
    }
    // An exchange with an alternate exchange, a binding with arguments, routed publishes.
    api.ok(
        "PUT",
        "/api/exchanges/%2F/lost",
        Some(json!({"type": "fanout"})),
    )
    .await;
    api.ok("PUT", "/api/queues/%2F/lost-q", None).await;
    api.ok("POST", "/api/bindings/%2F/e/lost/q/lost-q", Some(json!({})))
        .await;
    let x =
        json!({"type": "headers", "durable": true, "arguments": {"alternate-exchange": "lost"}});
    api.expect("PUT", "/api/exchanges/%2F/by-kind", Some(x), 201)
        .await;
    assert_eq!(
        api.get("/api/exchanges/%2F/by-kind").await["arguments"],
        json!({"alternate-exchange": "lost"})
    );
    let b = api
        .call(
            "POST",
            "/api/bindings/%2F/e/by-kind/q/jobs",
            Some(json!({"routing_key": "", "arguments": {"x-match": "all", "kind": "big"}})),
        )
        .await;
    assert_eq!(b.status, 201);
    let listed = api.get("/api/bindings/%2F/e/by-kind/q/jobs").await;
    assert_eq!(
        listed[0]["arguments"],
        json!({"x-match": "all", "kind": "big"})
    );
    let key = listed[0]["properties_key"].as_str().unwrap().to_owned();
    let publish = |kind: &str| json!({"properties": {"headers": {"kind": kind}}, "routing_key": "", "payload": kind});
    for (exchange, body, routed) in [
        ("by-kind", publish("big"), true),
        // Unmatched: the alternate exchange takes it.
        ("by-kind", publish("small"), true),
        // Unroutable.
        (
            "amq.direct",
            json!({"routing_key": "none", "payload": "x"}),
            false,
        ),
    ] {
        let path = format!("/api/exchanges/%2F/{exchange}/publish");
        let r = api.call("POST", &path, Some(body.clone())).await;
        assert_eq!(r.json, json!({ "routed": routed }), "{body}: {}", r.text);
    }
    assert_eq!(api.get("/api/queues/%2F/jobs").await["messages_ready"], 1);
    assert_eq!(api.get("/api/queues/%2F/lost-q").await["messages_ready"], 1);
    // The binding goes by its key; deleting an exchange in use with if-unused is refused.
    let a = api
        .call("DELETE", "/api/exchanges/%2F/by-kind?if-unused=true", None)
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    let path = format!(
        "/api/bindings/%2F/e/by-kind/q/jobs/{}",
        common::http::seg(&key)
    );
    api.expect("GET", &path, None, 200).await;
    api.expect("DELETE", &path, None, 204).await;
    api.expect("DELETE", &path, None, 404).await;
    api.expect(
        "DELETE",
        "/api/exchanges/%2F/by-kind?if-unused=true",
        None,
        204,
    )
    .await;
    api.expect("DELETE", "/api/exchanges/%2F/amq.direct", None, 403)
        .await;
    api.expect("DELETE", "/api/exchanges/%2F/nope", None, 404)
        .await;
    // Bindings from the default exchange cannot be made.
    api.expect(
        "POST",
        "/api/bindings/%2F/e/amq.default/q/jobs",
        Some(json!({})),
        403,
    )
    .await;
    broker.shutdown().await;
}

/// `POST /api/queues/%2F/{queue}/get`: up to `count` messages in `ackmode`, their payloads as
/// text where they are text, cut to `truncate` bytes.
async fn get_messages(
    api: &Api,
    queue: &str,
    count: usize,
    ackmode: &str,
    truncate: usize,
) -> Answer {
    let body =
        json!({"count": count, "ackmode": ackmode, "encoding": "auto", "truncate": truncate});
    api.call("POST", &format!("/api/queues/%2F/{queue}/get"), Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_takes_messages_in_each_ack_mode() {
    let (broker, api) = broker_with_api().await;
    api.ok("PUT", "/api/queues/%2F/dead", None).await;
    api.ok(
        "PUT",
        "/api/queues/%2F/work",
        Some(json!({"arguments": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}})),
    )
    .await;
    for i in 0..4 {
        api.ok(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({
                "properties": {"delivery_mode": 2, "content_type": "text/plain", "headers": {"n": i}},
                "routing_key": "work",
                "payload": format!("message {i}"),
            })),
        )
        .await;
    }
    // Requeue: the messages stay, redelivered.
    let got = get_messages(&api, "work", 2, "ack_requeue_true", 50000)
        .await
        .json;
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(got[0]["payload"], "message 0");
    assert_eq!(got[0]["properties"]["headers"], json!({"n": 0}));
    assert_eq!(got[0]["message_count"], 3);
    assert_eq!(got[0]["redelivered"], false);
    let again = get_messages(&api, "work", 1, "ack_requeue_false", 50000)
        .await
        .json;
    assert_eq!(again[0]["payload"], "message 0");
    assert_eq!(again[0]["redelivered"], true);
    // Reject without requeue: dead-lettered.
    get_messages(&api, "work", 1, "reject_requeue_false", 50000).await;
    assert_eq!(api.get("/api/queues/%2F/dead").await["messages_ready"], 1);
    assert_eq!(api.get("/api/queues/%2F/work").await["messages_ready"], 2);
    // Binary payloads come back as base64; truncate cuts them.
    api.ok(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        Some(json!({"routing_key": "dead", "payload": "/w==", "payload_encoding": "base64"})),
    )
    .await;
    let got = get_messages(&api, "dead", 5, "ack_requeue_true", 3)
        .await
        .json;
    assert_eq!(got[0]["payload"], "mes", "truncated to 3 bytes");
    assert_eq!(got[0]["payload_bytes"], 9);
    assert_eq!(got[1]["payload_encoding"], "base64");
    assert_eq!(got[1]["payload"], "/w==");
    // An empty queue answers an empty list; bad modes are refused.
    api.ok("PUT", "/api/queues/%2F/empty", None).await;
    let empty = get_messages(&api, "empty", 3, "ack_requeue_true", 50000).await;
    assert_eq!(empty.json, json!([]), "{}", empty.text);
    let bogus = get_messages(&api, "work", 1, "bogus", 50000).await;
    assert_eq!(bogus.status, 400, "{}", bogus.text);
    // Another user's user_id, and a body over the limit, are refused.
    let a = api
        .call(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({"routing_key": "work", "payload": "x", "properties": {"user_id": "someone"}})),
        )
        .await;
    assert_eq!(a.status, 400);
    let big = "x".repeat(70 * 1024);
    let a = api
        .call(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({"routing_key": "work", "payload": big})),
        )
        .await;
    assert_eq!(a.status, 413);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_administrators_act_through_their_permissions() {
    let (broker, api) = broker_with_api().await;
    api.ok("PUT", "/api/queues/%2F/app.q", None).await;
    api.add_user(
        "app",
        "pw",
        "management",
        ["^app\\.", "^amq\\.default$", "^app\\."],
    )
    .await;
    let app = api.as_user("app", "pw");
    // Configure on app.* only.
    app.expect("PUT", "/api/queues/%2F/app.mine", None, 201)
        .await;
    app.expect("PUT", "/api/queues/%2F/other", None, 403).await;
    // Write on the default exchange, read on app.* queues.
    let publish = json!({"routing_key": "app.q", "payload": "hi"});
    app.expect(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        Some(publish.clone()),
        200,
    )
    .await;
    app.expect(
        "POST",
        "/api/exchanges/%2F/amq.topic/publish",
        Some(publish),
        403,
    )
    .await;
    let get = json!({"count": 1, "ackmode": "ack_requeue_false"});
    app.expect("POST", "/api/queues/%2F/app.q/get", Some(get), 200)
        .await;
    // Bind needs write on the queue: refused.
    app.expect(
        "POST",
        "/api/bindings/%2F/e/amq.direct/q/app.q",
        Some(json!({})),
        403,
    )
    .await;
    // Nothing at all in a vhost without permissions.
    api.ok("PUT", "/api/vhosts/private", None).await;
    app.expect("PUT", "/api/queues/private/app.x", None, 403)
        .await;
    api.expect("PUT", "/api/queues/private/app.x", None, 201)
        .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_over_time_follow_a_publisher() {
    let (broker, api) = broker_with_api().await;
    api.ok("PUT", "/api/queues/%2F/steady", None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (url, stop) = (broker.amqp_url(), stop.clone());
        common::amqp::publish_until_stopped(
            url,
            "steady",
            b"x",
            BasicProperties::default(),
            Duration::from_millis(10),
            stop,
        )
    };
    let q = "?msg_rates_age=60&msg_rates_incr=5&lengths_age=60&lengths_incr=5";
    let rate_of = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_f64).unwrap_or(0.0);
    // Two samples (the sampler takes one every 5 s) with the publisher between them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (queue, overview) = loop {
        let queue = api.get(&format!("/api/queues/%2F/steady{q}")).await;
        let overview = api.get(&format!("/api/overview{q}")).await;
        if rate_of(&queue, "/message_stats/publish_details/rate") > 0.0
            && rate_of(&overview, "/message_stats/publish_details/rate") > 0.0
            && rate_of(&queue, "/messages_details/rate") > 0.0
        {
            break (queue, overview);
        }
        assert!(Instant::now() < deadline, "no rate after 30 s: {queue}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let rate = rate_of(&queue, "/message_stats/publish_details/rate");
    assert!(rate > 5.0 && rate < 150.0, "publishing ~60/s, rate {rate}");
    let samples = queue["message_stats"]["publish_details"]["samples"]
        .as_array()
        .unwrap();
    assert!(samples.len() >= 2);
    // Newest first, five seconds apart, counters that grew.
    let (a, b) = (&samples[0], &samples[1]);
    assert!(a["timestamp"].as_u64() > b["timestamp"].as_u64());
    assert!(a["sample"].as_u64() > b["sample"].as_u64());
    assert!(overview["queue_totals"]["messages_details"]["samples"].is_array());
    // The node's own history (the dashboard's store and memory charts).
    let node = &api.get(&format!("/api/nodes{q}")).await[0];
    assert!(node["lepus"]["history"]["memory_used_details"]["samples"].is_array());
    assert!(node["lepus"]["memory_budget"].as_u64().unwrap() > 0);
    // Once the publisher stops, the rate falls back to zero.
    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queue = api.get("/api/queues/%2F/steady").await;
        if queue["message_stats"]["publish_details"]["rate"] == json!(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the rate stayed at {queue}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    broker.shutdown().await;
}
