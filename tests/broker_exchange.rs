//! The AMQP `exchange` class and routing against the test broker: the predeclared exchanges,
//! declare (passive, durable, auto-delete, internal), delete (if-unused), exchange-to-exchange
//! bind/unbind, alternate exchanges, and direct/fanout/topic/headers routing, with the error
//! replies (403, 404, 406, 503). Each test passes against RabbitMQ 3.10, which is the
//! specification the bundled broker must meet.
//!
//! Routing checks publish on a confirm channel: once the confirm arrives the message has been
//! routed and enqueued, so draining the queues with basic.get sees exactly what was routed.

mod amqp;
mod common;

use amqp::*;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

/// Starts the test broker, connects, and declares an exchange of `kind` named from `prefix`:
/// the broker, the connection, a channel and the exchange's name.
async fn start_with_exchange(
    kind: ExchangeKind,
    prefix: &str,
) -> (common::TestBroker, Connection, Channel, String) {
    let (broker, conn, ch) = start_and_open().await;
    let ex = common::unique(prefix);
    declare_exchange(&ch, &ex, kind).await;
    (broker, conn, ch, ex)
}

/// Publishes each of `keys` to `ex` with the key as body, on confirm channel `pch`, and waits
/// for each confirm.
async fn publish_keys(pch: &Channel, ex: &str, keys: &[&str]) {
    for key in keys {
        publish_confirmed(pch, ex, key, key.as_bytes(), BasicProperties::default()).await;
    }
}

/// Declares one queue per key of `bindings`, binds it to `ex` with each listed key, publishes
/// one message per routing key in `publish` (body = routing key), and returns what each queue
/// received, in binding order.
async fn route(
    conn: &Connection,
    ex: &str,
    bindings: &[&[&str]],
    publish: &[&str],
) -> Vec<Vec<String>> {
    let ch = channel(conn).await;
    let mut queues = Vec::new();
    for keys in bindings {
        let q = declare_unique_queue(&ch, "q.route").await;
        for key in *keys {
            bind(&ch, &q, ex, key).await;
        }
        queues.push(q);
    }
    let pch = confirm_channel(conn).await;
    for key in publish {
        let c = publish_confirmed(&pch, ex, key, key.as_bytes(), BasicProperties::default()).await;
        assert!(c.is_ack(), "publish to {ex} with {key} confirmed");
    }
    let mut out = Vec::new();
    for q in &queues {
        out.push(drain(&ch, q).await);
        delete_queues(&ch, &[&q]).await;
    }
    out
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    let (_broker, _conn, ch) = start_and_open().await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        passive_exchange_as(&ch, name, kind)
            .await
            .unwrap_or_else(|e| panic!("{name} exists: {e}"));
    }
    // The predeclared exchanges are durable: a matching non-passive declare is accepted.
    declare_durable_exchange(&ch, "amq.direct", ExchangeKind::Direct).await;
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let (_broker, conn, ch, q) = start_with_queue("q.default").await;
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, "", &q, b"hello", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["hello"]);
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_404() {
    let (_broker, _conn, ch) = start_and_open().await;
    let missing = common::unique("ex.missing");
    assert_code(passive_exchange(&ch, &missing).await, 404);
}

#[tokio::test]
async fn redeclare_with_a_different_type_is_406() {
    let (_broker, conn, ch) = start_and_open().await;
    let ex = common::unique("ex.redeclare");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let (plain, args) = (ExchangeDeclareOptions::default(), FieldTable::default());
    let res = try_declare_exchange(&ch, &ex, ExchangeKind::Fanout, plain, args.clone()).await;
    assert_code(res, 406);
    let ch = channel(&conn).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let res = try_declare_exchange(&ch, &ex, ExchangeKind::Direct, durable, args).await;
    assert_code(res, 406);
    delete_exchange(&channel(&conn).await, &ex).await;
}

#[tokio::test]
async fn declaring_an_exchange_with_the_amq_prefix_is_403() {
    let (_broker, _conn, ch) = start_and_open().await;
    let name = common::unique("amq.mine");
    let (options, args) = (ExchangeDeclareOptions::default(), FieldTable::default());
    let res = try_declare_exchange(&ch, &name, ExchangeKind::Direct, options, args).await;
    assert_code(res, 403);
}

#[tokio::test]
async fn declaring_an_unknown_exchange_type_is_a_503_connection_error() {
    let (_broker, conn, ch) = start_and_open().await;
    let name = common::unique("ex.weird");
    let weird = ExchangeKind::Custom("no-such-type".into());
    let (options, args) = (ExchangeDeclareOptions::default(), FieldTable::default());
    assert_code(
        try_declare_exchange(&ch, &name, weird, options, args).await,
        503,
    );
    // COMMAND_INVALID is a hard error: the whole connection is closed.
    within("the connection to close", async {
        while conn.status().connected() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn delete_if_unused_on_a_bound_exchange_is_406() {
    let (_broker, conn, ch) = start_and_open().await;
    let (ex, q) = bound_queue(&ch, ExchangeKind::Fanout, "", "ex.ifunused", "q.ifunused").await;
    assert_code(try_delete_exchange(&ch, &ex, true).await, 406);
    let ch = channel(&conn).await;
    delete_queues(&ch, &[&q]).await;
    try_delete_exchange(&ch, &ex, true)
        .await
        .expect("if-unused delete once unbound");
    assert_code(
        passive_exchange_as(&ch, &ex, ExchangeKind::Fanout).await,
        404,
    );
}

#[tokio::test]
async fn delete_of_a_missing_exchange_is_ok() {
    // RabbitMQ errata: exchange.delete is idempotent.
    let (_broker, _conn, ch) = start_and_open().await;
    delete_exchange(&ch, &common::unique("ex.never")).await;
}

#[tokio::test]
async fn deleting_a_predeclared_exchange_is_403() {
    let (_broker, conn, ch) = start_and_open().await;
    assert_code(try_delete_exchange(&ch, "amq.direct", false).await, 403);
    let ch = channel(&conn).await;
    assert_code(try_delete_exchange(&ch, "", false).await, 403);
}

#[tokio::test]
async fn direct_exchange_routes_on_the_exact_key() {
    let (_broker, conn, ch, ex) = start_with_exchange(ExchangeKind::Direct, "ex.direct").await;
    let got = route(
        &conn,
        &ex,
        &[&["error"], &["info", "warning", "error"]],
        &["info", "error", "debug", "warning", "error.x"],
    )
    .await;
    assert_eq!(got[0], vec!["error"]);
    assert_eq!(got[1], vec!["info", "error", "warning"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn fanout_exchange_ignores_the_routing_key() {
    let (_broker, conn, ch, ex) = start_with_exchange(ExchangeKind::Fanout, "ex.fanout").await;
    let got = route(&conn, &ex, &[&[""], &["whatever"]], &["a", "b"]).await;
    assert_eq!(got, vec![vec!["a", "b"], vec!["a", "b"]]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn topic_hash_matches_zero_or_more_words() {
    let (_broker, conn, ch, ex) = start_with_exchange(ExchangeKind::Topic, "ex.topic.hash").await;
    let keys = [
        "kern",
        "kern.info",
        "kern.a.b",
        "kernel.info",
        "x.error",
        "error",
        "a.z",
        "a.b.c.z",
        "",
    ];
    let bindings: &[&[&str]] = &[&["kern.#"], &["#"], &["#.error"], &["a.#.z"]];
    let got = route(&conn, &ex, bindings, &keys).await;
    // `#` matches zero words: "kern" matches "kern.#", "error" matches "#.error", "a.z" "a.#.z".
    assert_eq!(got[0], vec!["kern", "kern.info", "kern.a.b"]);
    assert_eq!(
        got[1], keys,
        "`#` alone matches every key, the empty one too"
    );
    assert_eq!(got[2], vec!["x.error", "error"]);
    assert_eq!(got[3], vec!["a.z", "a.b.c.z"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn topic_star_matches_exactly_one_word() {
    let (_broker, conn, ch, ex) = start_with_exchange(ExchangeKind::Topic, "ex.topic.star").await;
    let got = route(
        &conn,
        &ex,
        &[&["*.orange.*"], &["*.*.rabbit", "lazy.#"], &["*"]],
        &[
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "quick.brown.fox",
            "orange",
            "quick.orange.male.rabbit",
            "lazy.orange.male.rabbit",
            "lazy",
            "",
        ],
    )
    .await;
    assert_eq!(
        got[0],
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    // "lazy.pink.rabbit" matches both bindings of the second queue but arrives once.
    assert_eq!(
        got[1],
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit",
            "lazy",
        ]
    );
    // `*` needs exactly one word: "orange" and "lazy" match, the empty key does not.
    assert_eq!(got[2], vec!["orange", "lazy"]);
    delete_exchange(&ch, &ex).await;
}

async fn headers_route(
    conn: &Connection,
    ex: &str,
    binding: FieldTable,
    messages: &[(&str, FieldTable)],
) -> Vec<String> {
    let ch = channel(conn).await;
    let q = declare_unique_queue(&ch, "q.headers").await;
    bind_with(&ch, &q, ex, "ignored", binding).await;
    let pch = confirm_channel(conn).await;
    for (body, headers) in messages {
        let props = BasicProperties::default().with_headers(headers.clone());
        publish_confirmed(&pch, ex, "any-key", body.as_bytes(), props).await;
    }
    let got = drain(&ch, &q).await;
    delete_queues(&ch, &[&q]).await;
    got
}

/// The binding arguments format=pdf and type=report, after `x-match` when given.
fn pdf_report_binding(x_match: Option<&str>) -> FieldTable {
    let mut args = vec![("format", s("pdf")), ("type", s("report"))];
    if let Some(x_match) = x_match {
        args.insert(0, ("x-match", s(x_match)));
    }
    table(args)
}

fn header_messages() -> Vec<(&'static str, FieldTable)> {
    vec![
        (
            "both",
            table(vec![("format", s("pdf")), ("type", s("report"))]),
        ),
        (
            "both+extra",
            table(vec![
                ("format", s("pdf")),
                ("type", s("report")),
                ("x", s("y")),
            ]),
        ),
        ("format-only", table(vec![("format", s("pdf"))])),
        ("type-only", table(vec![("type", s("report"))])),
        (
            "wrong-value",
            table(vec![("format", s("zip")), ("type", s("log"))]),
        ),
        ("none", FieldTable::default()),
    ]
}

#[tokio::test]
async fn headers_exchange_x_match_all() {
    let (_broker, conn, ch, ex) =
        start_with_exchange(ExchangeKind::Headers, "ex.headers.all").await;
    let binding = pdf_report_binding(Some("all"));
    let got = headers_route(&conn, &ex, binding, &header_messages()).await;
    assert_eq!(got, vec!["both", "both+extra"]);
    // Without x-match the default is "all".
    let binding = pdf_report_binding(None);
    let got = headers_route(&conn, &ex, binding, &header_messages()).await;
    assert_eq!(got, vec!["both", "both+extra"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn headers_exchange_x_match_any() {
    let (_broker, conn, ch, ex) =
        start_with_exchange(ExchangeKind::Headers, "ex.headers.any").await;
    let binding = pdf_report_binding(Some("any"));
    let got = headers_route(&conn, &ex, binding, &header_messages()).await;
    assert_eq!(got, vec!["both", "both+extra", "format-only", "type-only"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn headers_binding_with_only_x_match_matches_everything_for_all() {
    // A binding whose only argument is x-match=all has no header to check, so every message
    // matches (RabbitMQ ignores binding arguments that start with "x-").
    let (_broker, conn, _ch) = start_and_open().await;
    let got = headers_route(
        &conn,
        "amq.match",
        table(vec![
            ("x-match", s("all")),
            ("x-lepus-test", s(&common::unique("token"))),
        ]),
        &[("one", FieldTable::default())],
    )
    .await;
    assert_eq!(got, vec!["one"]);
}

#[tokio::test]
async fn exchange_to_exchange_binding_routes_and_unbinds() {
    let (_broker, conn, ch, src) = start_with_exchange(ExchangeKind::Topic, "ex.e2e.src").await;
    let (dst, q) = bound_queue(&ch, ExchangeKind::Fanout, "", "ex.e2e.dst", "q.e2e").await;
    bind_exchange(&ch, &dst, &src, "logs.*").await;
    let pch = confirm_channel(&conn).await;
    publish_keys(&pch, &src, &["logs.info", "metrics.cpu", "logs.error"]).await;
    assert_eq!(drain(&ch, &q).await, vec!["logs.info", "logs.error"]);
    try_unbind_exchange(&ch, &dst, &src, "logs.*")
        .await
        .expect("exchange.unbind");
    let props = BasicProperties::default();
    publish_confirmed(&pch, &src, "logs.info", b"after", props.clone()).await;
    publish_confirmed(&pch, &dst, "", b"direct", props).await;
    assert_eq!(drain(&ch, &q).await, vec!["direct"]);
    delete_all(&ch, &[&q], &[&src, &dst]).await;
}

#[tokio::test]
async fn exchange_bind_with_a_missing_exchange_is_404() {
    let (_broker, conn, ch) = start_and_open().await;
    let missing = common::unique("ex.missing");
    let no_args = FieldTable::default;
    let res = try_bind_exchange(&ch, "amq.fanout", &missing, "", no_args()).await;
    assert_code(res, 404);
    let ch = channel(&conn).await;
    let res = try_bind_exchange(&ch, &missing, "amq.fanout", "", no_args()).await;
    assert_code(res, 404);
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    let (_broker, conn, ch) = start_and_open().await;
    let (ae, q_ae) = bound_queue(&ch, ExchangeKind::Fanout, "", "ex.ae", "q.ae").await;
    let main = common::unique("ex.main");
    let q_main = common::unique("q.main");
    let with_ae = table(vec![("alternate-exchange", s(&ae))]);
    let options = ExchangeDeclareOptions::default();
    try_declare_exchange(&ch, &main, ExchangeKind::Direct, options, with_ae)
        .await
        .expect("declare with alternate-exchange");
    declare_queue(&ch, &q_main, FieldTable::default()).await;
    bind(&ch, &q_main, &main, "routed").await;
    let pch = confirm_channel(&conn).await;
    for key in ["routed", "lost-1", "lost-2"] {
        // Mandatory: a message taken by the alternate exchange is routed, so it is not returned.
        let props = BasicProperties::default();
        let c = publish_flagged(&pch, &main, key, mandatory(), key.as_bytes(), props)
            .await
            .expect("confirm");
        assert_eq!(c, lapin::Confirmation::Ack(None), "{key} was not returned");
    }
    assert_eq!(drain(&ch, &q_main).await, vec!["routed"]);
    assert_eq!(drain(&ch, &q_ae).await, vec!["lost-1", "lost-2"]);
    delete_all(&ch, &[&q_ae, &q_main], &[&main, &ae]).await;
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_403_but_e2e_routing_reaches_it() {
    let (_broker, conn, ch, front) = start_with_exchange(ExchangeKind::Fanout, "ex.front").await;
    let internal = common::unique("ex.internal");
    declare_internal_exchange(&ch, &internal, ExchangeKind::Fanout).await;
    let q = declare_unique_queue(&ch, "q.internal").await;
    bind(&ch, &q, &internal, "").await;
    bind_exchange(&ch, &internal, &front, "").await;
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, &front, "", b"via-front", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["via-front"]);

    let res = publish_error(&conn, &internal, "", BasicProperties::default()).await;
    assert_code(res, 403);
    delete_all(&ch, &[&q], &[&front, &internal]).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_404() {
    let (_broker, conn, _ch) = start_and_open().await;
    let missing = common::unique("ex.missing");
    let res = publish_error(&conn, &missing, "k", BasicProperties::default()).await;
    assert_code(res, 404);
    // The connection is fine.
    declare_server_named(&channel(&conn).await).await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let (_broker, conn, ch) = start_and_open().await;
    let ex = common::unique("ex.autodelete");
    declare_auto_delete_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let q = declare_unique_queue(&ch, "q.autodelete").await;
    bind(&ch, &q, &ex, "").await;
    unbind(&ch, &q, &ex, "").await;
    let probe = channel(&conn).await;
    assert_code(
        passive_exchange_as(&probe, &ex, ExchangeKind::Fanout).await,
        404,
    );
    delete_queues(&ch, &[&q]).await;
}

// Moved from tests/core_features.rs (exchange_types_e2e_bindings_and_alternate_exchange): one
// topic exchange with an alternate exchange and an e2e binding to an internal fanout, and a
// headers exchange with x-match any, all published to without confirms.
#[tokio::test]
async fn exchange_types_e2e_bindings_and_alternate_exchange() {
    let (broker, conn, ch) = start_and_open().await;
    let (topic, headers, fan, ae) = (
        common::unique("core.topic"),
        common::unique("core.headers"),
        common::unique("core.fan"),
        common::unique("core.ae"),
    );
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    let with_ae = table(vec![(
        "alternate-exchange",
        AMQPValue::LongString(ae.as_str().into()),
    )]);
    declare_exchange_with(
        &ch,
        &topic,
        ExchangeKind::Topic,
        Default::default(),
        with_ae,
    )
    .await;
    declare_exchange(&ch, &headers, ExchangeKind::Headers).await;
    declare_internal_exchange(&ch, &fan, ExchangeKind::Fanout).await;
    let [qt, qh, qf, qa] = declare_unique_queues(&ch, ["q.t", "q.h", "q.f", "q.a"]).await;
    bind(&ch, &qt, &topic, "a.#").await;
    bind(&ch, &qt, &topic, "*.x").await;
    let any = table(vec![
        ("x-match", AMQPValue::LongString("any".into())),
        ("k", AMQPValue::LongString("v".into())),
        ("n", AMQPValue::LongInt(1)),
    ]);
    bind_with(&ch, &qh, &headers, "", any).await;
    bind(&ch, &qf, &fan, "").await;
    bind(&ch, &qa, &ae, "").await;
    bind_exchange(&ch, &fan, &topic, "e2e.#").await;
    for key in ["a", "a.b.c", "b.x", "b.c.x", "e2e.1", "zzz"] {
        publish(&ch, &topic, key, key.as_bytes()).await;
    }
    let h = |k: &str, v: AMQPValue| BasicProperties::default().with_headers(table(vec![(k, v)]));
    for (body, header) in [
        (b"h1", h("k", s("v"))),
        (b"h2", h("n", AMQPValue::LongInt(1))),
        (b"h3", h("k", s("w"))),
    ] {
        publish_with(&ch, &headers, "", body, header).await;
    }
    assert_eq!(drain_settled(&ch, &qt).await, vec!["a", "a.b.c", "b.x"]);
    assert_eq!(drain_settled(&ch, &qh).await, vec!["h1", "h2"]);
    assert_eq!(drain_settled(&ch, &qf).await, vec!["e2e.1"]);
    assert_eq!(drain_settled(&ch, &qa).await, vec!["b.c.x", "zzz"]);
    // Publishing to an internal exchange is refused.
    let err = match ch
        .basic_publish(
            fan.as_str().into(),
            "".into(),
            Default::default(),
            b"no",
            BasicProperties::default(),
        )
        .await
    {
        Err(e) => e,
        Ok(_) => ch
            .basic_get(qf.as_str().into(), Default::default())
            .await
            .expect_err("the channel is closed"),
    };
    assert_channel_closed_with(&err, 403);
    let ch = channel(&conn).await;
    delete_all(&ch, &[&qt, &qh, &qf, &qa], &[&topic, &headers, &fan, &ae]).await;
    finish(conn, broker).await;
}

#[tokio::test]
async fn a_headers_binding_needs_a_valid_x_match() {
    // RabbitMQ's headers exchange validates bindings: x-match must be the long string all,
    // any, all-with-x or any-with-x ("PRECONDITION_FAILED - Invalid x-match field value"),
    // for queue.bind and exchange.bind (checked against the source's type). Other exchange
    // types ignore it. Found by difftest (the bundled broker accepted anything).
    let (_broker, conn, setup, q) = start_with_queue("q.xmatch").await;
    let bad = [
        AMQPValue::LongString("most".into()),
        AMQPValue::LongString("".into()),
        AMQPValue::LongInt(1),
        AMQPValue::Boolean(true),
    ];
    for value in bad {
        let args = table(vec![("x-match", value.clone())]);
        let ch = channel(&conn).await;
        let res = try_bind(&ch, &q, "amq.headers", "", args.clone()).await;
        assert_code(res, 406);
        let ch = channel(&conn).await;
        let res = try_bind_exchange(&ch, "amq.direct", "amq.match", "", args.clone()).await;
        assert_code(res, 406);
        // Not a headers exchange: not validated.
        try_bind(&setup, &q, "amq.topic", "k", args)
            .await
            .unwrap_or_else(|e| panic!("x-match {value:?} on a topic exchange: {e}"));
    }
    for good in ["all", "any", "all-with-x", "any-with-x"] {
        let args = table(vec![("x-match", s(good))]);
        try_bind(&setup, &q, "amq.headers", "", args)
            .await
            .unwrap_or_else(|e| panic!("x-match {good}: {e}"));
    }
    delete_queues(&setup, &[&q]).await;
}
