//! The few lapin calls the runtime makes with the same options from several places, named for
//! what they do: a durable or passive `queue.declare`, a durable `exchange.declare`, a new
//! channel in confirm mode, and the mandatory publish to the default exchange through which
//! tasks, results, workflow steps and bounced deliveries go.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};

use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, ExchangeKind, PublisherConfirm};

use crate::error::REPLY_CODE_NO_ROUTE;

/// Declares the durable queue `queue` with `arguments` (task, delay, dead-letter, result,
/// schedule and revocation queues).
pub(crate) async fn declare_durable(
    channel: &lapin::Channel,
    queue: &str,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
}

/// Declares the durable exchange `exchange` of `kind` with `arguments` (the RPC exchanges,
/// the control exchange, an event's exchange): declared the same way by everyone who uses it,
/// so whoever comes first creates it and the others' declarations agree with it.
pub(crate) async fn declare_durable_exchange(
    channel: &lapin::Channel,
    exchange: &str,
    kind: ExchangeKind,
    arguments: FieldTable,
) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            arguments,
        )
        .await
}

/// Looks `queue` up with a passive `queue.declare` (which creates nothing): its counts, or
/// the broker's error, 404 when it does not exist (which closes `channel`).
pub(crate) async fn passive_declare(
    channel: &lapin::Channel,
    queue: &str,
) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Opens a new channel on `conn` and puts it in confirm mode (`confirm.select`): the channel
/// of a client's or a worker's publishes that must be in the broker before they count.
pub(crate) async fn confirm_channel(conn: &lapin::Connection) -> lapin::Result<lapin::Channel> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes `body` to `queue` through the default exchange with `mandatory` set, so that a
/// queue that is not there comes back as a `basic.return` (on a confirm channel, in the
/// confirm: `Confirmation::Ack(Some(returned))`) instead of the message being dropped.
pub(crate) async fn publish_mandatory(
    channel: &lapin::Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> lapin::Result<PublisherConfirm> {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            properties,
        )
        .await
}

/// True when the broker returned a mandatory publish because no queue of that name exists
/// (`basic.return` with 312 NO_ROUTE, which a confirm channel hands back in the confirm).
pub(crate) fn returned_no_route(confirmation: &Confirmation) -> bool {
    matches!(
        confirmation,
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))
            if returned.reply_code == REPLY_CODE_NO_ROUTE
    )
}
