//! Method handlers, one file per AMQP class (publishing, the hot path, has its own file).
//! [`dispatch`] routes a decoded method on an open channel to its handler; handlers are
//! `impl Session` blocks: they reach the channel map, the vhost and the outbox through the
//! connection's [`Session`], never the connection task itself (socket, handshake, read loop).
//! Methods only a server may send (deliver, get-ok, ...) are 503 COMMAND_INVALID, as in
//! RabbitMQ.

mod basic;
mod basic_publish;
mod channel;
mod confirm;
mod exchange;
mod queue;
mod session;
mod tx;

pub(crate) use queue::config_difference;
pub(crate) use session::{HeldReply, Session};

use amq_protocol::protocol::{access, AMQPClass};

use crate::error::AmqpError;

/// Runs `method`, received on open channel `ch`.
pub(crate) fn dispatch(conn: &mut Session, ch: u16, method: AMQPClass) -> Result<(), AmqpError> {
    use amq_protocol::protocol::{
        basic as b, channel as c, confirm as cf, exchange as e, queue as q, tx as t,
    };
    // The empty-queue-name shortcut first, so that permissions are checked on the queue it
    // names; then permissions, as RabbitMQ checks them before acting (403 closes the channel).
    let mut method = method;
    expand_queue_shortcut(conn, ch, &mut method)?;
    conn.grants.authorize(&method)?;
    match method {
        AMQPClass::Basic(b::AMQPMethod::Publish(m)) => conn.basic_publish(ch, m),
        AMQPClass::Basic(b::AMQPMethod::Ack(m)) => conn.basic_ack(ch, m.delivery_tag, m.multiple),
        AMQPClass::Basic(b::AMQPMethod::Nack(m)) => {
            conn.basic_nack(ch, m.delivery_tag, m.multiple, m.requeue)
        }
        AMQPClass::Basic(b::AMQPMethod::Reject(m)) => {
            conn.basic_nack(ch, m.delivery_tag, false, m.requeue)
        }
        AMQPClass::Basic(b::AMQPMethod::Qos(m)) => conn.basic_qos(ch, m),
        AMQPClass::Basic(b::AMQPMethod::Consume(m)) => conn.basic_consume(ch, m),
        AMQPClass::Basic(b::AMQPMethod::Cancel(m)) => conn.basic_cancel(ch, m),
        AMQPClass::Basic(b::AMQPMethod::Get(m)) => conn.basic_get(ch, m),
        AMQPClass::Basic(b::AMQPMethod::Recover(m)) => conn.basic_recover(ch, m.requeue, true),
        AMQPClass::Basic(b::AMQPMethod::RecoverAsync(m)) => {
            conn.basic_recover(ch, m.requeue, false)
        }
        AMQPClass::Channel(c::AMQPMethod::Close(_)) => conn.channel_close(ch),
        AMQPClass::Channel(c::AMQPMethod::Flow(m)) => conn.channel_flow(ch, m.active),
        AMQPClass::Channel(c::AMQPMethod::Open(_)) => Err(AmqpError::channel_error(format!(
            "second 'channel.open' seen on channel {ch}"
        ))),
        AMQPClass::Exchange(e::AMQPMethod::Declare(m)) => conn.exchange_declare(ch, m),
        AMQPClass::Exchange(e::AMQPMethod::Delete(m)) => conn.exchange_delete(ch, m),
        AMQPClass::Exchange(e::AMQPMethod::Bind(m)) => conn.exchange_bind(ch, m),
        AMQPClass::Exchange(e::AMQPMethod::Unbind(m)) => conn.exchange_unbind(ch, m),
        AMQPClass::Queue(q::AMQPMethod::Declare(m)) => conn.queue_declare(ch, m),
        AMQPClass::Queue(q::AMQPMethod::Bind(m)) => conn.queue_bind(ch, m),
        AMQPClass::Queue(q::AMQPMethod::Unbind(m)) => conn.queue_unbind(ch, m),
        AMQPClass::Queue(q::AMQPMethod::Purge(m)) => conn.queue_purge(ch, m),
        AMQPClass::Queue(q::AMQPMethod::Delete(m)) => conn.queue_delete(ch, m),
        AMQPClass::Confirm(cf::AMQPMethod::Select(m)) => conn.confirm_select(ch, m.nowait),
        AMQPClass::Tx(t::AMQPMethod::Select(_)) => conn.tx_select(ch),
        AMQPClass::Tx(t::AMQPMethod::Commit(_)) => conn.tx_commit(ch),
        AMQPClass::Tx(t::AMQPMethod::Rollback(_)) => conn.tx_rollback(ch),
        AMQPClass::Access(access::AMQPMethod::Request(_)) => {
            // Deprecated in 0-9-1 but still sent by old clients; always granted.
            conn.send(
                ch,
                AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
            );
            Ok(())
        }
        // channel.close-ok and channel.flow-ok land here too: on an open channel the server
        // sent neither close nor flow (a closing channel never reaches dispatch), so like
        // RabbitMQ 3.10 they are 503 "unimplemented method", a connection error.
        _ => Err(AmqpError::command_invalid("unimplemented method")),
    }
}

/// Replaces an empty queue name with the channel's most recently declared queue, and for
/// `queue.bind`/`queue.unbind` an empty routing key with that name too, as the spec's field
/// docs say and RabbitMQ does (`expand_queue_name_shortcut`, `expand_routing_key_shortcut`).
/// With no queue declared on the channel yet, RabbitMQ's 404 "no previously declared queue".
/// `queue.declare` is not expanded: there an empty name asks for a server-named queue.
fn expand_queue_shortcut(conn: &Session, ch: u16, method: &mut AMQPClass) -> Result<(), AmqpError> {
    use amq_protocol::protocol::{basic as b, queue as q};
    let (queue, routing_key) = match method {
        AMQPClass::Queue(q::AMQPMethod::Bind(m)) => (&mut m.queue, Some(&mut m.routing_key)),
        AMQPClass::Queue(q::AMQPMethod::Unbind(m)) => (&mut m.queue, Some(&mut m.routing_key)),
        AMQPClass::Queue(q::AMQPMethod::Purge(m)) => (&mut m.queue, None),
        AMQPClass::Queue(q::AMQPMethod::Delete(m)) => (&mut m.queue, None),
        AMQPClass::Basic(b::AMQPMethod::Consume(m)) => (&mut m.queue, None),
        AMQPClass::Basic(b::AMQPMethod::Get(m)) => (&mut m.queue, None),
        _ => return Ok(()),
    };
    if !queue.as_str().is_empty() {
        return Ok(());
    }
    let last = conn
        .channels
        .get(&ch)
        .and_then(|c| c.last_queue.as_deref())
        .ok_or_else(|| AmqpError::not_found("no previously declared queue"))?;
    if let Some(routing_key) = routing_key.filter(|k| k.as_str().is_empty()) {
        *routing_key = last.into();
    }
    *queue = last.into();
    Ok(())
}

/// A durable topology change the store refused: 541 INTERNAL_ERROR.
pub(crate) fn not_persisted(err: crate::store::StoreError) -> AmqpError {
    AmqpError::new(
        crate::error::ReplyCode::InternalError,
        format!("cannot persist the topology: {err}"),
    )
}

/// RabbitMQ's wording for a missing queue.
pub(crate) fn no_queue(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no queue '{name}' in vhost '{vhost}'"))
}

/// The binding arguments an exchange type accepts, as RabbitMQ validates them
/// (`validate_binding` of its exchange type modules): a headers exchange's `x-match` must be
/// the long string `all`, `any`, `all-with-x` or `any-with-x`; the other types take anything.
/// 406 PRECONDITION_FAILED with RabbitMQ's text otherwise.
pub(crate) fn validate_binding(
    kind: crate::exchange::ExchangeKind,
    arguments: &amq_protocol::types::FieldTable,
) -> Result<(), AmqpError> {
    use amq_protocol::types::AMQPValue;
    if kind != crate::exchange::ExchangeKind::Headers {
        return Ok(());
    }
    match arguments.inner().get("x-match") {
        None => Ok(()),
        Some(AMQPValue::LongString(s))
            if matches!(
                s.as_bytes(),
                b"all" | b"any" | b"all-with-x" | b"any-with-x"
            ) =>
        {
            Ok(())
        }
        Some(AMQPValue::LongString(s)) => Err(AmqpError::precondition_failed(format!(
            "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
            String::from_utf8_lossy(s.as_bytes())
        ))),
        Some(other) => Err(AmqpError::precondition_failed(format!(
            "Invalid x-match field type {} (value {other:?}); expected longstr",
            other.get_type().get_id()
        ))),
    }
}

/// RabbitMQ's refusal of an operation that names the default exchange (`""`) where it may
/// not: deleting or binding it.
pub(crate) fn default_exchange() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

/// RabbitMQ's wording for a missing exchange.
pub(crate) fn no_exchange(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no exchange '{name}' in vhost '{vhost}'"))
}

/// RabbitMQ's wording for an exclusive queue owned by another connection.
pub(crate) fn locked(name: &str, vhost: &str) -> AmqpError {
    AmqpError::resource_locked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could \
         be originally declared on another connection or the exclusive property value does not \
         match that of the original declaration."
    ))
}
