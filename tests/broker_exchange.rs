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
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

/// Declares one queue per key of `bindings`, binds it to `ex` with each listed key, publishes
/// one message per routing key in `publish` (body = routing key), and returns what each queue
/// received, in binding order.
async fn route(
    conn: &Connection,
    ex: &str,
    bindings: &[&[&str]],
    publish: &[&str],
) -> Vec<Vec<String>> {
    let ch = conn.create_channel().await.expect("channel");
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

async fn delete_exchange(ch: &Channel, ex: &str) {
    ch.exchange_delete(ex.into(), ExchangeDeleteOptions::default())
        .await
        .expect("exchange.delete");
}

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    }
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
        ch.exchange_declare(name.into(), kind, passive(), FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{name} exists: {e}"));
    }
    // The predeclared exchanges are durable: a matching non-passive declare is accepted.
    declare_durable_exchange(&ch, "amq.direct", ExchangeKind::Direct).await;
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let q = declare_unique_queue(&ch, "q.default").await;
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, "", &q, b"hello", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["hello"]);
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_404() {
    let (_broker, _conn, ch) = start_and_open().await;
    let res = ch
        .exchange_declare(
            common::unique("ex.missing").as_str().into(),
            ExchangeKind::Direct,
            passive(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 404);
}

#[tokio::test]
async fn redeclare_with_a_different_type_is_406() {
    let (_broker, conn, ch) = start_and_open().await;
    let ex = common::unique("ex.redeclare");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let res = ch
        .exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 406);
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_code(res, 406);
    let ch = conn.create_channel().await.expect("channel");
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn declaring_an_exchange_with_the_amq_prefix_is_403() {
    let (_broker, _conn, ch) = start_and_open().await;
    let res = ch
        .exchange_declare(
            common::unique("amq.mine").as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 403);
}

#[tokio::test]
async fn declaring_an_unknown_exchange_type_is_a_503_connection_error() {
    let (_broker, conn, ch) = start_and_open().await;
    let res = ch
        .exchange_declare(
            common::unique("ex.weird").as_str().into(),
            ExchangeKind::Custom("no-such-type".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 503);
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
    let res = ch
        .exchange_delete(
            ex.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..ExchangeDeleteOptions::default()
            },
        )
        .await;
    assert_code(res, 406);
    let ch = conn.create_channel().await.expect("channel");
    delete_queues(&ch, &[&q]).await;
    ch.exchange_delete(
        ex.as_str().into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..ExchangeDeleteOptions::default()
        },
    )
    .await
    .expect("if-unused delete once unbound");
    assert_code(
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            passive(),
            FieldTable::default(),
        )
        .await,
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
    let res = ch
        .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
        .await;
    assert_code(res, 403);
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .exchange_delete("".into(), ExchangeDeleteOptions::default())
        .await;
    assert_code(res, 403);
}

#[tokio::test]
async fn direct_exchange_routes_on_the_exact_key() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ex = common::unique("ex.direct");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
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
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ex = common::unique("ex.fanout");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let got = route(&conn, &ex, &[&[""], &["whatever"]], &["a", "b"]).await;
    assert_eq!(got, vec![vec!["a", "b"], vec!["a", "b"]]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn topic_hash_matches_zero_or_more_words() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ex = common::unique("ex.topic.hash");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    let got = route(
        &conn,
        &ex,
        &[&["kern.#"], &["#"], &["#.error"], &["a.#.z"]],
        &[
            "kern",
            "kern.info",
            "kern.a.b",
            "kernel.info",
            "x.error",
            "error",
            "a.z",
            "a.b.c.z",
            "",
        ],
    )
    .await;
    // `#` matches zero words: "kern" matches "kern.#", "error" matches "#.error", "a.z" "a.#.z".
    assert_eq!(got[0], vec!["kern", "kern.info", "kern.a.b"]);
    assert_eq!(
        got[1],
        vec![
            "kern",
            "kern.info",
            "kern.a.b",
            "kernel.info",
            "x.error",
            "error",
            "a.z",
            "a.b.c.z",
            ""
        ]
    );
    assert_eq!(got[2], vec!["x.error", "error"]);
    assert_eq!(got[3], vec!["a.z", "a.b.c.z"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn topic_star_matches_exactly_one_word() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ex = common::unique("ex.topic.star");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
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
    let ch = conn.create_channel().await.expect("channel");
    let q = declare_unique_queue(&ch, "q.headers").await;
    ch.queue_bind(
        q.as_str().into(),
        ex.into(),
        "ignored".into(),
        QueueBindOptions::default(),
        binding,
    )
    .await
    .expect("bind");
    let pch = confirm_channel(conn).await;
    for (body, headers) in messages {
        publish_confirmed(
            &pch,
            ex,
            "any-key",
            body.as_bytes(),
            BasicProperties::default().with_headers(headers.clone()),
        )
        .await;
    }
    let got = drain(&ch, &q).await;
    delete_queues(&ch, &[&q]).await;
    got
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
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
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ex = common::unique("ex.headers.all");
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let binding = table(vec![
        ("x-match", s("all")),
        ("format", s("pdf")),
        ("type", s("report")),
    ]);
    let got = headers_route(&conn, &ex, binding, &header_messages()).await;
    assert_eq!(got, vec!["both", "both+extra"]);
    // Without x-match the default is "all".
    let binding = table(vec![("format", s("pdf")), ("type", s("report"))]);
    let got = headers_route(&conn, &ex, binding, &header_messages()).await;
    assert_eq!(got, vec!["both", "both+extra"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn headers_exchange_x_match_any() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ex = common::unique("ex.headers.any");
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let binding = table(vec![
        ("x-match", s("any")),
        ("format", s("pdf")),
        ("type", s("report")),
    ]);
    let got = headers_route(&conn, &ex, binding, &header_messages()).await;
    assert_eq!(got, vec!["both", "both+extra", "format-only", "type-only"]);
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn headers_binding_with_only_x_match_matches_everything_for_all() {
    // A binding whose only argument is x-match=all has no header to check, so every message
    // matches (RabbitMQ ignores binding arguments that start with "x-").
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
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
    drop(ch);
}

#[tokio::test]
async fn exchange_to_exchange_binding_routes_and_unbinds() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let src = common::unique("ex.e2e.src");
    let dst = common::unique("ex.e2e.dst");
    let q = common::unique("q.e2e");
    declare_exchange(&ch, &src, ExchangeKind::Topic).await;
    declare_exchange(&ch, &dst, ExchangeKind::Fanout).await;
    declare_queue(&ch, &q, FieldTable::default()).await;
    bind(&ch, &q, &dst, "").await;
    ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "logs.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.bind");
    let pch = confirm_channel(&conn).await;
    for key in ["logs.info", "metrics.cpu", "logs.error"] {
        publish_confirmed(&pch, &src, key, key.as_bytes(), BasicProperties::default()).await;
    }
    assert_eq!(drain(&ch, &q).await, vec!["logs.info", "logs.error"]);
    ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "logs.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.unbind");
    publish_confirmed(
        &pch,
        &src,
        "logs.info",
        b"after",
        BasicProperties::default(),
    )
    .await;
    publish_confirmed(&pch, &dst, "", b"direct", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["direct"]);
    delete_queues(&ch, &[&q]).await;
    delete_exchange(&ch, &src).await;
    delete_exchange(&ch, &dst).await;
}

#[tokio::test]
async fn exchange_bind_with_a_missing_exchange_is_404() {
    let (_broker, conn, ch) = start_and_open().await;
    let res = ch
        .exchange_bind(
            "amq.fanout".into(),
            common::unique("ex.missing").as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 404);
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .exchange_bind(
            common::unique("ex.missing").as_str().into(),
            "amq.fanout".into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 404);
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let ae = common::unique("ex.ae");
    let main = common::unique("ex.main");
    let q_ae = common::unique("q.ae");
    let q_main = common::unique("q.main");
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    ch.exchange_declare(
        main.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(vec![("alternate-exchange", s(&ae))]),
    )
    .await
    .expect("declare with alternate-exchange");
    declare_queue(&ch, &q_ae, FieldTable::default()).await;
    declare_queue(&ch, &q_main, FieldTable::default()).await;
    bind(&ch, &q_ae, &ae, "").await;
    bind(&ch, &q_main, &main, "routed").await;
    let pch = confirm_channel(&conn).await;
    for key in ["routed", "lost-1", "lost-2"] {
        // Mandatory: a message taken by the alternate exchange is routed, so it is not returned.
        let confirm = pch
            .basic_publish(
                main.as_str().into(),
                key.into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                key.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        let c = within("confirm", confirm).await.expect("confirm");
        assert_eq!(c, lapin::Confirmation::Ack(None), "{key} was not returned");
    }
    assert_eq!(drain(&ch, &q_main).await, vec!["routed"]);
    assert_eq!(drain(&ch, &q_ae).await, vec!["lost-1", "lost-2"]);
    for q in [&q_ae, &q_main] {
        delete_queues(&ch, &[&q]).await;
    }
    delete_exchange(&ch, &main).await;
    delete_exchange(&ch, &ae).await;
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_403_but_e2e_routing_reaches_it() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let internal = common::unique("ex.internal");
    let front = common::unique("ex.front");
    let q = common::unique("q.internal");
    ch.exchange_declare(
        internal.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare internal");
    declare_exchange(&ch, &front, ExchangeKind::Fanout).await;
    declare_queue(&ch, &q, FieldTable::default()).await;
    bind(&ch, &q, &internal, "").await;
    ch.exchange_bind(
        internal.as_str().into(),
        front.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind internal behind front");
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, &front, "", b"via-front", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["via-front"]);

    let res = publish_error(&conn, &internal, "", BasicProperties::default()).await;
    assert_code(res, 403);
    delete_queues(&ch, &[&q]).await;
    delete_exchange(&ch, &front).await;
    delete_exchange(&ch, &internal).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_404() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let res = publish_error(
        &conn,
        &common::unique("ex.missing"),
        "k",
        BasicProperties::default(),
    )
    .await;
    assert_code(res, 404);
    // The connection is fine.
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "".into(),
        lapin::options::QueueDeclareOptions::exclusive(),
        FieldTable::default(),
    )
    .await
    .expect("connection still usable");
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let (_broker, conn, ch) = start_and_open().await;
    let ex = common::unique("ex.autodelete");
    let q = common::unique("q.autodelete");
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    declare_queue(&ch, &q, FieldTable::default()).await;
    bind(&ch, &q, &ex, "").await;
    ch.queue_unbind(
        q.as_str().into(),
        ex.as_str().into(),
        "".into(),
        FieldTable::default(),
    )
    .await
    .expect("unbind");
    let probe = conn.create_channel().await.expect("channel");
    let res = probe
        .exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            passive(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 404);
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
    let internal = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    declare_exchange_with(
        &ch,
        &fan,
        ExchangeKind::Fanout,
        internal,
        FieldTable::default(),
    )
    .await;
    let (qt, qh, qf, qa) = (
        common::unique("q.t"),
        common::unique("q.h"),
        common::unique("q.f"),
        common::unique("q.a"),
    );
    for q in [&qt, &qh, &qf, &qa] {
        declare_queue(&ch, q, FieldTable::default()).await;
    }
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
    ch.exchange_bind(
        fan.as_str().into(),
        topic.as_str().into(),
        "e2e.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.bind");
    for key in ["a", "a.b.c", "b.x", "b.c.x", "e2e.1", "zzz"] {
        publish(&ch, &topic, key, key.as_bytes()).await;
    }
    let h = |k: &str, v: AMQPValue| BasicProperties::default().with_headers(table(vec![(k, v)]));
    publish_with(
        &ch,
        &headers,
        "",
        b"h1",
        h("k", AMQPValue::LongString("v".into())),
    )
    .await;
    publish_with(&ch, &headers, "", b"h2", h("n", AMQPValue::LongInt(1))).await;
    publish_with(
        &ch,
        &headers,
        "",
        b"h3",
        h("k", AMQPValue::LongString("w".into())),
    )
    .await;
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
    let ch = conn.create_channel().await.expect("channel");
    delete_queues(&ch, &[&qt, &qh, &qf, &qa]).await;
    for x in [&topic, &headers, &fan, &ae] {
        delete_exchange(&ch, x).await;
    }
    finish(conn, broker).await;
}

#[tokio::test]
async fn a_headers_binding_needs_a_valid_x_match() {
    // RabbitMQ's headers exchange validates bindings: x-match must be the long string all,
    // any, all-with-x or any-with-x ("PRECONDITION_FAILED - Invalid x-match field value"),
    // for queue.bind and exchange.bind (checked against the source's type). Other exchange
    // types ignore it. Found by difftest (the bundled broker accepted anything).
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let setup = conn.create_channel().await.expect("channel");
    let q = declare_unique_queue(&setup, "q.xmatch").await;
    let bad = [
        AMQPValue::LongString("most".into()),
        AMQPValue::LongString("".into()),
        AMQPValue::LongInt(1),
        AMQPValue::Boolean(true),
    ];
    for value in bad {
        let args = table(vec![("x-match", value.clone())]);
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_bind(
                q.as_str().into(),
                "amq.headers".into(),
                "".into(),
                QueueBindOptions::default(),
                args.clone(),
            )
            .await;
        assert_code(res, 406);
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .exchange_bind(
                "amq.direct".into(),
                "amq.match".into(),
                "".into(),
                ExchangeBindOptions::default(),
                args.clone(),
            )
            .await;
        assert_code(res, 406);
        // Not a headers exchange: not validated.
        setup
            .queue_bind(
                q.as_str().into(),
                "amq.topic".into(),
                "k".into(),
                QueueBindOptions::default(),
                args,
            )
            .await
            .unwrap_or_else(|e| panic!("x-match {value:?} on a topic exchange: {e}"));
    }
    for good in ["all", "any", "all-with-x", "any-with-x"] {
        setup
            .queue_bind(
                q.as_str().into(),
                "amq.headers".into(),
                "".into(),
                QueueBindOptions::default(),
                table(vec![("x-match", AMQPValue::LongString(good.into()))]),
            )
            .await
            .unwrap_or_else(|e| panic!("x-match {good}: {e}"));
    }
    delete_queues(&setup, &[&q]).await;
}
