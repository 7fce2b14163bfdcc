//! The handshake: protocol header, `connection.start`/`start-ok` (authentication),
//! `tune`/`tune-ok` (limits), `open` (vhost and permissions), within the handshake timeout;
//! what the broker says about itself (`server_properties`).

use super::*;
use crate::error::MethodId;

/// The largest frame a client may send before `tune-ok` (AMQP 0-9-1 `frame-min-size`), and the
/// lowest frame_max a client may negotiate.
pub(crate) const FRAME_MIN_SIZE: u32 = 4096;

/// The server properties of `connection.start`.
pub(super) fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props.insert("product".into(), s("Lepus"));
    props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), s("Rust"));
    props.insert("cluster_name".into(), s("lepus"));
    props.insert("copyright".into(), s("The Lepus authors"));
    props.insert(
        "information".into(),
        s("Lepus bundled AMQP 0-9-1 broker; licensed MIT OR Apache-2.0"),
    );
    props
}

/// Runs the handshake up to `open-ok`. `None` when the client went away or was refused.
pub(super) async fn handshake(
    read: &mut ReadStream,
    buf: &mut BytesMut,
    writer: &Arc<Outbox>,
    broker: &Arc<BrokerShared>,
    peer: SocketAddr,
    id: u64,
) -> Option<Connection> {
    while buf.len() < 8 {
        match read.read_buf(buf).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    let _ = writer.send(Outbound::Raw(PROTOCOL_HEADER));
                }
                return None;
            }
            Ok(_) => {
                if buf.len() < 8 && !PROTOCOL_HEADER.starts_with(&buf[..]) {
                    break;
                }
            }
        }
    }
    if buf.len() < 8 || &buf[..8] != PROTOCOL_HEADER {
        warn!(connection = id, %peer, "bad protocol header");
        let _ = writer.send(Outbound::Raw(PROTOCOL_HEADER));
        return None;
    }
    buf.advance(8);
    let config = &broker.config;
    let send = |m: connection::AMQPMethod| {
        let _ = writer.send(Outbound::Method(0, AMQPClass::Connection(m)));
    };
    send(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: auth::MECHANISMS.into(),
        locales: "en_US".into(),
    }));
    let unexpected = |what: &str| {
        let err = AmqpError::command_invalid(format!("expected {what}"));
        warn!(connection = id, %peer, code = err.code.code(), text = %err.text, "handshake failed");
        send_connection_close(writer, &err);
        None
    };
    // Spec (section 4.2.3): "Until the frame-max has been negotiated, both peers MUST accept
    // frames of up to frame-min-size octets large", and no larger: frames before tune-ok are
    // held to 4,096 bytes, overhead included (a larger one is 501 FRAME_ERROR). RabbitMQ adds
    // its 8-byte fudge here too (payloads up to 4,096) and drops the socket on a larger one.
    let start_ok = match next_frame(read, buf, writer, FRAME_MIN_SIZE).await? {
        InboundFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(m))) => m,
        _ => return unexpected("connection.start-ok"),
    };
    let client_capability =
        |name: &str| match start_ok.client_properties.inner().get("capabilities") {
            Some(AMQPValue::FieldTable(caps)) => {
                matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
            }
            _ => false,
        };
    let cancel_notify = client_capability("consumer_cancel_notify");
    let blocked_notify = client_capability("connection.blocked");
    let failure_close = client_capability("authentication_failure_close");
    let user = match auth::authenticate(
        start_ok.mechanism.as_str(),
        start_ok.response.as_bytes(),
        &broker.access,
        peer.ip(),
    ) {
        Ok(user) => user,
        Err(err @ AuthError::UnknownMechanism(_)) => {
            // Spec (start-ok, "mechanism"): the server MUST close the connection without
            // sending any further data. RabbitMQ does the same.
            warn!(connection = id, %peer, cause = %err, "login refused");
            return None;
        }
        Err(err) => {
            let err = AmqpError::access_refused(err.to_string());
            warn!(connection = id, %peer, text = %err.text, "login refused");
            // As RabbitMQ: a client that announced `authentication_failure_close` gets
            // connection.close 403; any other client just sees the socket close (AMQP 0-9-1
            // has no other way to report a failed login).
            if failure_close {
                send_connection_close(writer, &err);
            }
            return None;
        }
    };
    let heartbeat = u16::try_from(config.heartbeat.as_secs()).unwrap_or(u16::MAX);
    send(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        heartbeat,
    }));
    let tune_ok = match next_frame(read, buf, writer, FRAME_MIN_SIZE).await? {
        InboundFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(m))) => m,
        _ => return unexpected("connection.tune-ok"),
    };
    let negotiate = |ours: u32, theirs: u32| match (ours, theirs) {
        (0, t) => t,
        (o, 0) => o,
        (o, t) => o.min(t),
    };
    // A client may lower the limits but not raise them (0 means "no limit": take ours), and
    // frame_max may not go below the spec's 4096; RabbitMQ refuses these too.
    let refusal = if tune_ok.channel_max > config.channel_max && config.channel_max != 0 {
        Some(format!(
            "negotiated channel_max = {} is higher than the maximum allowed value ({})",
            tune_ok.channel_max, config.channel_max
        ))
    } else if tune_ok.frame_max != 0 && tune_ok.frame_max < FRAME_MIN_SIZE {
        Some(format!(
            "frame_max={} < {FRAME_MIN_SIZE} min size",
            tune_ok.frame_max
        ))
    } else if tune_ok.frame_max > config.frame_max && config.frame_max != 0 {
        Some(format!(
            "frame_max={} > {} max size",
            tune_ok.frame_max, config.frame_max
        ))
    } else {
        None
    };
    if let Some(text) = refusal {
        // Spec (tune-ok): the server MUST close the connection without attempting a
        // negotiated close. RabbitMQ drops the socket too.
        warn!(connection = id, %peer, %text, "tune-ok refused");
        return None;
    }
    let frame_max = negotiate(config.frame_max, tune_ok.frame_max).max(FRAME_MIN_SIZE);
    let channel_max = negotiate(
        u32::from(config.channel_max),
        u32::from(tune_ok.channel_max),
    );
    let channel_max = u16::try_from(channel_max).unwrap_or(u16::MAX);
    // The client's heartbeat value is final (0 disables), as in RabbitMQ.
    let heartbeat =
        (tune_ok.heartbeat > 0).then(|| Duration::from_secs(u64::from(tune_ok.heartbeat)));
    let _ = writer.send(Outbound::Tune {
        frame_max,
        heartbeat,
    });
    let open = match next_frame(read, buf, writer, frame_max).await? {
        InboundFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(m))) => m,
        _ => return unexpected("connection.open"),
    };
    if let Some(max) = broker.config.max_connections {
        // Counted at connection.open, as RabbitMQ checks `connection_max`: handshakes in
        // progress do not count, open connections do.
        if broker.connections.count() >= max {
            let err = AmqpError::not_allowed(format!(
                "connection refused: node connection limit ({max}) is reached"
            ))
            .in_amqp_method(MethodId::CONNECTION_OPEN);
            warn!(connection = id, %peer, limit = max, "connection limit reached");
            send_connection_close(writer, &err);
            return None;
        }
    }
    if broker.access.vhost_exists(open.virtual_host.as_str())
        && !broker
            .access
            .can_open_vhost(&user, open.virtual_host.as_str())
    {
        let err = AmqpError::not_allowed(format!(
            "access to vhost '{}' refused for user '{user}'",
            open.virtual_host.as_str()
        ))
        .in_amqp_method(MethodId::CONNECTION_OPEN);
        warn!(connection = id, %peer, %user, vhost = open.virtual_host.as_str(), "vhost access refused");
        send_connection_close(writer, &err);
        return None;
    }
    let vhost = broker
        .vhosts
        .get(open.virtual_host.as_str())
        .filter(|_| broker.access.vhost_exists(open.virtual_host.as_str()));
    let Some(vhost) = vhost else {
        let err = AmqpError::not_allowed(format!("vhost {} not found", open.virtual_host.as_str()))
            .in_amqp_method(MethodId::CONNECTION_OPEN);
        warn!(connection = id, %peer, vhost = open.virtual_host.as_str(), "unknown vhost");
        send_connection_close(writer, &err);
        return None;
    };
    send(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    info!(connection = id, %peer, %user, vhost = %vhost.name, "connection opened");
    let (events, _) = mpsc::unbounded_channel();
    let blocking =
        crate::connection_blocked::Blocking::new(vhost.memory.subscribe(), blocked_notify);
    let grants = crate::access::Grants::new(user, vhost.name.clone(), broker.access.clone());
    let blocks = super::ReadBlocks::new(vhost.account.clone());
    Some(Connection {
        session: Session {
            id,
            vhost,
            outbox: writer.clone(),
            events,
            channels: HashMap::new(),
            cancel_notify,
            exclusive_queues: Vec::new(),
            reply_tokens: HashMap::new(),
            grants,
            broker: broker.clone(),
            blocking,
            work: 0,
            held: None,
        },
        peer,
        channel_max,
        frame_max,
        closing_since: None,
        done: false,
        heartbeat,
        blocks,
    })
}
