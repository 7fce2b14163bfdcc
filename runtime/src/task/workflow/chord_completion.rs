//! The worker side of a chord: a member's outcome goes into the chord's results queue, and the
//! worker that completes the last member publishes the callback, exactly once.
//!
//! # Queues of chord `<id>` (declared by the submitting client, durable, `x-expires` = the
//! chord's result TTL)
//! - `lepus.chord.<id>`: one message per member outcome: headers `x-lepus-chord-index` (`l`),
//!   `x-lepus-status` (`succeeded` / `failed` / `dead-lettered`), `x-lepus-method` (the task
//!   that ended the member), `x-lepus-error`; body: the output (MessagePack) or nothing. A
//!   member run twice (a worker died before its ack) leaves two messages: readers keep the first
//!   of each index. Nobody acks them; the queue is deleted once the callback is enqueued.
//! - `lepus.chord.<id>.token`: exactly one message, the [`ChordToken`] (MessagePack): the member
//!   count, the callback's steps, the chord's result queue; once the chord is complete, a
//!   marker in its place (header `x-lepus-chord-done`), so that late workers learn it.
//!
//! # Electing the completer
//! After publishing its outcome (confirmed), a worker reads the results queue's message count
//! (passive `queue.declare`); below the member count it is done. Otherwise it opens a
//! transactional channel and takes the token with `basic.get` (not acked). Holding the token,
//! it reads the results; when every index is there it publishes the callback (or the chord's
//! failure) and the done marker, acks the token and commits: the callback and the token's
//! removal happen together or not at all, so the callback is enqueued exactly once, whoever else completes a member
//! and however often a member is redelivered. Without every index (duplicates counted), it
//! closes its channels, which hands the token back. A worker that finds the token taken waits
//! and tries again for [`TOKEN_WAIT`] (the holder may give it back); the done marker means the
//! chord is complete. After the commit the completer purges the results queue, so a member
//! run again later stops at the message count; the queues expire with the chord's result TTL
//! (`x-expires`), nobody deletes them, so no late worker meets a 404 that closes its channel. A worker that dies while holding the token never committed: the
//! broker hands the token back.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::amqp::{passive_declare, publish_mandatory, returned_no_route};
use crate::envelope::{CONTENT_TYPE, HEADER_METHOD};
use crate::task::headers;
use crate::task::result_wire::{self, Status, RESULT_QUEUE, RESULT_TTL};
use crate::task::workflow::flow_headers::{self, ChordSlot, CHORD_INDEX, FAILED_MEMBERS};
use crate::task::workflow::step::{array_of, Step};
use crate::task::workflow::workflow_handle::MemberFailure;
use crate::worker::publisher::WorkerPublisher;

/// How long a worker that finds the token taken keeps trying to get it.
pub(crate) const TOKEN_WAIT: Duration = Duration::from_secs(5);
/// The pause between two tries.
const TOKEN_PAUSE: Duration = Duration::from_millis(50);
/// How long the completer waits for each result message it counted.
const READ_WAIT: Duration = Duration::from_secs(10);

/// The chord's token message body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChordToken {
    /// The member count.
    pub(crate) size: u32,
    /// The callback chain; its first step takes the list of the members' outputs first.
    pub(crate) callback: Vec<Step>,
    /// The chord's result queue and its TTL in ms.
    pub(crate) result_queue: String,
    pub(crate) result_ttl: i64,
}

/// How a member's chain ended.
pub(crate) enum MemberOutcome<'a> {
    /// Its last step's output.
    Succeeded(&'a [u8]),
    /// A step failed after its retries.
    Failed {
        /// `failed` (the task's `Err`) or `dead-lettered`.
        status: Status,
        attempts: u32,
        error: &'a str,
    },
}

/// Records a member's outcome in its chord, then completes the chord if it was the last.
/// An `Err` means the outcome is not recorded for sure: the member's delivery is requeued.
pub(crate) async fn member_done(
    publisher: &WorkerPublisher,
    slot: &ChordSlot,
    task: &str,
    outcome: MemberOutcome<'_>,
) -> Result<(), String> {
    let opened = publisher
        .confirmed()
        .await
        .map_err(|e| format!("no publishing channel: {e}"))?;
    let mut table = FieldTable::default();
    headers::insert_int(&mut table, CHORD_INDEX, i64::from(slot.index));
    table.insert(HEADER_METHOD.into(), headers::long_string(task));
    let body: &[u8] = match &outcome {
        MemberOutcome::Succeeded(body) => {
            table.insert(
                result_wire::STATUS.into(),
                headers::long_string(Status::Succeeded.as_str()),
            );
            body
        }
        MemberOutcome::Failed {
            status,
            attempts,
            error,
        } => {
            table.insert(
                result_wire::STATUS.into(),
                headers::long_string(status.as_str()),
            );
            headers::insert_int(&mut table, headers::ATTEMPTS, i64::from(*attempts));
            table.insert(
                headers::ERROR.into(),
                headers::long_string(&headers::bounded_error((*error).to_owned())),
            );
            &[]
        }
    };
    let confirm = publish_mandatory(
        &opened.channel,
        slot.queue.as_str(),
        body,
        BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_headers(table),
    )
    .await
    .map_err(|e| format!("publishing to {}: {e}", slot.queue))?;
    match confirm.await {
        Ok(Confirmation::Ack(None)) => {}
        Ok(confirmation) if returned_no_route(&confirmation) => {
            // The chord completed (its queues deleted) or expired: nothing waits for this.
            debug!(chord = %slot.queue, index = slot.index, "chord already complete or expired; member outcome dropped");
            return Ok(());
        }
        Ok(other) => {
            return Err(format!(
                "{} refused the member outcome: {other:?}",
                slot.queue
            ))
        }
        Err(err) => return Err(format!("confirm from {}: {err}", slot.queue)),
    }
    complete(publisher, slot).await
}

/// Completes the chord if every member is in (see the module's election).
async fn complete(publisher: &WorkerPublisher, slot: &ChordSlot) -> Result<(), String> {
    let probe = channel(publisher).await?;
    let counted = message_count(&probe, &slot.queue).await;
    close(probe).await;
    match counted? {
        None => return Ok(()),
        Some(count) if count < slot.size => return Ok(()),
        Some(_) => {}
    }
    let tx = channel(publisher).await?;
    let done = async {
        tx.tx_select()
            .await
            .map_err(|e| format!("tx.select: {e}"))?;
        let Some(token) = take_token(&tx, slot).await? else {
            return Ok(());
        };
        finish(publisher, &tx, slot, token).await
    }
    .await;
    // Uncommitted, closing hands the token back; committed, it is gone.
    close(tx).await;
    done
}

/// Takes the token, waiting up to [`TOKEN_WAIT`] while another worker holds it; `None` when
/// the chord is complete (the token queue is gone) or the holder kept it.
async fn take_token(
    tx: &lapin::Channel,
    slot: &ChordSlot,
) -> Result<Option<BasicGetMessage>, String> {
    let token_queue = slot.token_queue();
    let rounds = TOKEN_WAIT.as_millis() / TOKEN_PAUSE.as_millis();
    for _ in 0..rounds {
        match tx
            .basic_get(
                token_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
        {
            Ok(Some(token)) if is_done_marker(&token) => {
                // Closing the channel hands the marker back for the next one to see.
                return Ok(None);
            }
            Ok(Some(token)) => return Ok(Some(token)),
            Ok(None) => tokio::time::sleep(TOKEN_PAUSE).await,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(format!("basic.get on {token_queue}: {err}")),
        }
    }
    debug!(chord = %slot.queue, "chord token held by another worker; leaving the chord to it");
    Ok(None)
}

/// Holding the token: reads the results and, when every member is in, publishes the callback
/// (or the chord's failure), acks the token and commits.
async fn finish(
    publisher: &WorkerPublisher,
    tx: &lapin::Channel,
    slot: &ChordSlot,
    token: BasicGetMessage,
) -> Result<(), String> {
    let chord: ChordToken = match crate::envelope::decode_bounded(&token.delivery.data) {
        Ok(chord) => chord,
        Err(err) => {
            // Our own format; a token that does not decode can never complete the chord.
            warn!(chord = %slot.queue, cause = %err, "chord token does not decode; the chord cannot complete");
            return Ok(());
        }
    };
    if !chord.callback.iter().all(Step::fits_short_strings) || chord.result_queue.len() > 255 {
        warn!(chord = %slot.queue, "chord token names a queue or an id over 255 bytes; the chord cannot complete");
        return Ok(());
    }
    // The reader's consumer outlives every `close(reader)` below: a lapin consumer dropped on
    // an open channel sends `basic.cancel` from a task of its own, racing our close into a
    // connection error (see `task::side_consumer`).
    let mut consumer = None;
    let reader = channel(publisher).await?;
    let read = read_results(&reader, slot, chord.size, &mut consumer).await;
    let entries = match read {
        Ok(Some(entries)) => entries,
        other => {
            // Closed before the token is handed back: the next holder sees every message.
            close(reader).await;
            return other.map(drop);
        }
    };
    let (routing_key, body, properties) = completion_message(&chord, &entries);
    let committed = async {
        tx.basic_publish(
            "".into(),
            routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await
        .map_err(|e| format!("publishing the chord callback: {e}"))?;
        tx.basic_publish(
            "".into(),
            slot.token_queue().as_str().into(),
            BasicPublishOptions::default(),
            &[],
            done_marker(),
        )
        .await
        .map_err(|e| format!("publishing the chord's done marker: {e}"))?;
        tx.basic_ack(token.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(|e| format!("acking the chord token: {e}"))?;
        tx.tx_commit().await.map_err(|e| format!("tx.commit: {e}"))
    }
    .await;
    if committed.is_ok() {
        info!(chord = %slot.queue, members = chord.size, "chord complete");
        // Not needed for correctness (the queues expire), but the results go now, and a
        // member run again later stops at the message count.
        close(reader).await;
        if let Ok(purger) = channel(publisher).await {
            let _ = purger
                .queue_purge(slot.queue.as_str().into(), QueuePurgeOptions::default())
                .await;
            close(purger).await;
        }
        return committed;
    }
    close(reader).await;
    committed
}

/// One member's recorded outcome.
struct Entry {
    status: Status,
    task: String,
    error: String,
    body: Vec<u8>,
}

/// Every member's outcome, first of each index, or `None` when some index is missing. The
/// consumer it starts is left in `held`, for the caller to drop after closing `reader`.
async fn read_results(
    reader: &lapin::Channel,
    slot: &ChordSlot,
    size: u32,
    held: &mut Option<lapin::Consumer>,
) -> Result<Option<Vec<Entry>>, String> {
    let Some(count) = message_count(reader, &slot.queue).await? else {
        return Ok(None);
    };
    let size = usize::try_from(size).map_err(|e| e.to_string())?;
    let mut entries: Vec<Option<Entry>> = (0..size).map(|_| None).collect();
    let mut filled = 0;
    let consumer = reader
        .basic_consume(
            slot.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("basic.consume on {}: {e}", slot.queue))?;
    let consumer = held.insert(consumer);
    for _ in 0..count {
        if filled == size {
            break;
        }
        let delivery = match tokio::time::timeout(READ_WAIT, consumer.next()).await {
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(err))) => return Err(format!("reading {}: {err}", slot.queue)),
            Ok(None) | Err(_) => break,
        };
        let h = delivery.properties.headers().as_ref();
        let index = headers::int(h, CHORD_INDEX).and_then(|i| usize::try_from(i).ok());
        let status = headers::string(h, result_wire::STATUS).and_then(|s| Status::parse(&s));
        if let (Some(index), Some(status)) = (index, status) {
            if let Some(entry @ None) = entries.get_mut(index) {
                *entry = Some(Entry {
                    status,
                    task: headers::string(h, HEADER_METHOD).unwrap_or_default(),
                    error: headers::string(h, headers::ERROR).unwrap_or_default(),
                    body: delivery.data,
                });
                filled += 1;
            }
        }
    }
    Ok(entries.into_iter().collect())
}

/// The message that completes the chord: the callback's first step with the list of outputs
/// when every member succeeded, else the chord's failed result listing the failed members.
fn completion_message(chord: &ChordToken, entries: &[Entry]) -> (String, Vec<u8>, BasicProperties) {
    let failures: Vec<MemberFailure> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.status != Status::Succeeded)
        .map(|(index, e)| MemberFailure {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            task: e.task.clone(),
            error: e.error.clone(),
        })
        .collect();
    let callback = if failures.is_empty() {
        callback_message(chord, entries)
    } else {
        Err(String::new())
    };
    match callback {
        Ok(message) => message,
        Err(reason) => failure_message(chord, failures, reason),
    }
}

fn callback_message(
    chord: &ChordToken,
    entries: &[Entry],
) -> Result<(String, Vec<u8>, BasicProperties), String> {
    let (first, rest) = chord
        .callback
        .split_first()
        .ok_or_else(|| "the chord has no callback".to_owned())?;
    let outputs = array_of(entries.iter().map(|e| e.body.as_slice()))?;
    let body = first.body(Some(&outputs))?;
    let mut carried = FieldTable::default();
    carried.insert(
        RESULT_QUEUE.into(),
        headers::long_string(&chord.result_queue),
    );
    headers::insert_int(&mut carried, RESULT_TTL, chord.result_ttl);
    let table = flow_headers::step_headers(first, rest, &carried)?;
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(first.id.as_str().into())
        .with_headers(table);
    Ok((first.queue.clone(), body, properties))
}

fn failure_message(
    chord: &ChordToken,
    failures: Vec<MemberFailure>,
    reason: String,
) -> (String, Vec<u8>, BasicProperties) {
    let error = if failures.is_empty() {
        format!("the chord's callback cannot be built: {reason}")
    } else {
        let listed: Vec<String> = failures
            .iter()
            .take(10)
            .map(|f| format!("[{}] {}: {}", f.index, f.task, f.error))
            .collect();
        format!(
            "{} of {} chord members failed; the callback did not run: {}",
            failures.len(),
            chord.size,
            listed.join("; ")
        )
    };
    let failed = i64::try_from(failures.len()).unwrap_or(i64::MAX);
    let mut body = Vec::new();
    // A Vec of plain structs always encodes; an empty body only loses the list, not the text.
    let _ = crate::envelope::encode_into(&mut body, &failures);
    let mut table = result_wire::result_headers(Status::Failed, 1, Some(&error));
    table.insert(HEADER_METHOD.into(), headers::long_string("chord"));
    headers::insert_int(&mut table, FAILED_MEMBERS, failed);
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_headers(table);
    (chord.result_queue.clone(), body, properties)
}

/// The header of the message that replaces the token once the chord is complete (`t`).
const DONE: &str = "x-lepus-chord-done";

fn done_marker() -> BasicProperties {
    let mut table = FieldTable::default();
    table.insert(DONE.into(), lapin::types::AMQPValue::Boolean(true));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(table)
}

fn is_done_marker(message: &BasicGetMessage) -> bool {
    message
        .delivery
        .properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(DONE))
}

/// The ready messages of `queue` (passive `queue.declare`), `None` when it is gone.
async fn message_count(channel: &lapin::Channel, queue: &str) -> Result<Option<u32>, String> {
    match passive_declare(channel, queue).await {
        Ok(declared) => Ok(Some(declared.message_count())),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(format!("queue.declare (passive) of {queue}: {err}")),
    }
}

fn is_not_found(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

async fn channel(publisher: &WorkerPublisher) -> Result<lapin::Channel, String> {
    publisher
        .fresh_channel()
        .await
        .map_err(|e| format!("no channel for the chord: {e}"))
}

async fn close(channel: lapin::Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "chord".into()).await;
    }
}
