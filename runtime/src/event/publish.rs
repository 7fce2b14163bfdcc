//! [`publish`]: sends an event to an exchange and waits for the broker's confirm.
//!
//! # Event message
//! Published to the named exchange with the caller's routing key, not `mandatory` (an event
//! nobody listens to is dropped, as in any pub/sub), on the client's confirm-mode publishing
//! channel (many publishes pipeline on it).
//!
//! | property        | value                                               |
//! |-----------------|-----------------------------------------------------|
//! | `content-type`  | `application/msgpack`                               |
//! | `delivery-mode` | 2 (persistent: survives in durable pool queues)     |
//! | `message-id`    | 32 lowercase hex digits (a v4 UUID)                 |
//! | `timestamp`     | Unix seconds                                        |
//! | headers         | `x-lepus-trace-id` (`S`), when published inside a handler's context |
//!
//! Body: the payload as one MessagePack value (structs as maps), not wrapped in an array.
//!
//! The client's queue prefix applies to exchange names too (except `""` and `amq.*`), so that
//! environments sharing a broker stay apart. Publishing to an exchange that does not exist
//! would make the broker close the publishing channel (404); [`publish`] checks it once per client
//! with a passive `exchange.declare` on a side channel and fails with [`Error::NotFound`].

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use serde::Serialize;
use tracing::Instrument;

use crate::amqp;
use crate::client::Client;
use crate::context::{write_onward, Onward};
use crate::envelope::{self, CONTENT_TYPE};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::observe::{self, Outcome};
use crate::task::enqueue::{close_side_channel, side_channel};
use crate::task::headers;

/// The AMQP reply code of a missing entity (spec 1.9, 404 NOT_FOUND).
const REPLY_CODE_NOT_FOUND: u16 = 404;

/// Publishes `payload` to `exchange` with `routing_key` and waits for the confirm. The
/// exchange must exist (handlers declare theirs; so does [`publish_event`]).
pub async fn publish<P: Serialize + ?Sized>(
    client: &Client,
    exchange: &str,
    routing_key: &str,
    payload: &P,
) -> Result<()> {
    let exchange = exchange_name(client.queue_prefix(), exchange);
    if !exchange.is_empty()
        && !client
            .declared()
            .is_fresh(&exchange, std::time::Duration::MAX)
    {
        let channel = side_channel(client).await?;
        let checked = channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        close_side_channel(channel).await;
        match checked {
            Ok(()) => client.declared().mark(&exchange),
            Err(err) => {
                let reply_code = Error::<crate::Never>::Transport(err).reply_code();
                return Err(Error::NotFound {
                    what: format!("exchange {exchange:?}"),
                    reply_code: reply_code.unwrap_or(REPLY_CODE_NOT_FOUND),
                });
            }
        }
    }
    send(client, &exchange, routing_key, payload).await
}

/// Publishes an event to the exchange of handler `E`, declaring that exchange (durable, of
/// `E::KIND`) on first use: the generated `on_error::publish(&client, "kern.error", &line)`.
pub async fn publish_event<E: Event>(
    client: &Client,
    routing_key: &str,
    payload: &E::Payload,
) -> Result<()>
where
    E::Payload: Serialize,
{
    let exchange = exchange_name(client.queue_prefix(), E::EXCHANGE);
    if !client
        .declared()
        .is_fresh(&exchange, std::time::Duration::MAX)
    {
        let channel = side_channel(client).await?;
        let declared = declare_exchange::<E>(&channel, &exchange).await;
        close_side_channel(channel).await;
        declared?;
        client.declared().mark(&exchange);
    }
    send(client, &exchange, routing_key, payload).await
}

/// Declares `exchange`, the (prefixed) exchange of event `E`: durable, of `E`'s kind, no
/// arguments. The publisher and the handler both declare it, so either may come first.
pub(crate) async fn declare_exchange<E: Event>(
    channel: &lapin::Channel,
    exchange: &str,
) -> lapin::Result<()> {
    amqp::declare_durable_exchange(channel, exchange, E::KIND.lapin(), FieldTable::default()).await
}

/// The exchange name with the prefix applied (not to `""` nor `amq.*`).
pub(crate) fn exchange_name(prefix: &str, exchange: &str) -> String {
    if prefix.is_empty() || exchange.is_empty() || exchange.starts_with("amq.") {
        exchange.to_owned()
    } else {
        format!("{prefix}{exchange}")
    }
}

/// Encodes and publishes on the publishing channel; waits for the confirm (inside a handler's
/// context, at most what is left of its deadline: see `context`).
async fn send<P: Serialize + ?Sized>(
    client: &Client,
    exchange: &str,
    routing_key: &str,
    payload: &P,
) -> Result<()> {
    // The publish's span, a child of the caller's; the handlers' runs are its children.
    let started = std::time::Instant::now();
    let span = observe::publish_span(exchange, routing_key);
    let result = send_bounded(client, exchange, routing_key, payload)
        .instrument(span.clone())
        .await;
    observe::finish(&span, Outcome::of_publish(&result), started);
    result
}

/// [`send`] within the time the current context has left.
async fn send_bounded<P: Serialize + ?Sized>(
    client: &Client,
    exchange: &str,
    routing_key: &str,
    payload: &P,
) -> Result<()> {
    let onward = Onward::current();
    let Some(onward) = onward else {
        return send_now(client, exchange, routing_key, payload, None).await;
    };
    let Some(left) = onward.time_left() else {
        return send_now(client, exchange, routing_key, payload, Some(&onward)).await;
    };
    if left.is_zero() {
        return Err(Error::Timeout(Duration::ZERO));
    }
    match tokio::time::timeout(
        left,
        send_now(client, exchange, routing_key, payload, Some(&onward)),
    )
    .await
    {
        Ok(sent) => sent,
        Err(_) => Err(Error::Timeout(left)),
    }
}

/// The `message-id` of an event, recorded on the current (publish) span.
fn message_id(id: uuid::Uuid) -> lapin::types::ShortString {
    let id = lapin::types::ShortString::from(id.simple().to_string());
    tracing::Span::current().record("message_id", id.as_str());
    id
}

async fn send_now<P: Serialize + ?Sized>(
    client: &Client,
    exchange: &str,
    routing_key: &str,
    payload: &P,
    onward: Option<&Onward>,
) -> Result<()> {
    let mut body = Vec::with_capacity(64);
    envelope::encode_into(&mut body, payload).map_err(Error::Encode)?;
    let now = headers::now_ms();
    let mut properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(message_id(uuid::Uuid::new_v4()))
        .with_timestamp(u64::try_from(now / 1000).unwrap_or_default());
    let mut headers = FieldTable::default();
    write_onward(&mut headers, onward);
    if !headers.inner().is_empty() {
        properties = properties.with_headers(headers);
    }
    let open = client.publisher().channel(client).await?;
    let confirm = open
        .channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await
        .map_err(|e| open.error(e))?;
    match confirm.await.map_err(|e| open.error(e))? {
        Confirmation::Ack(_) => Ok(()),
        Confirmation::Nack(_) => Err(Error::Nacked),
        Confirmation::NotRequested => Err(Error::Config(
            "the publishing channel is not in confirm mode".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_applies_to_own_exchanges_only() {
        assert_eq!(exchange_name("t1.", "logs"), "t1.logs");
        assert_eq!(exchange_name("t1.", "amq.topic"), "amq.topic");
        assert_eq!(exchange_name("t1.", ""), "");
        assert_eq!(exchange_name("", "logs"), "logs");
    }
}
