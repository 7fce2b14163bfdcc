//! Dead-lettering: what a queue drops (rejected, expired, over its length) republished to its
//! dead-letter exchange with an `x-death` entry, unless that would loop.

use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::persistence::Durability;

/// RabbitMQ's dead-letter cycle test: the message's `x-death` entries, newest first, up to
/// and including the first one for `target`, contain no rejection. (No entry for `target`: no
/// cycle.)
pub(super) fn is_cycle(message: &Message, target: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = message
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    let field = |d: &AMQPValue, key: &str| -> Option<Vec<u8>> {
        match d {
            AMQPValue::FieldTable(t) => match t.inner().get(key) {
                Some(AMQPValue::LongString(v)) => Some(v.as_bytes().to_vec()),
                _ => None,
            },
            _ => None,
        }
    };
    for death in deaths.as_slice() {
        if field(death, "reason").as_deref() == Some(b"rejected") {
            return false;
        }
        if field(death, "queue").as_deref() == Some(target.as_bytes()) {
            return true;
        }
    }
    false
}

/// The dead-lettered copy of `message`: `x-death` updated as RabbitMQ does (one entry per
/// queue and reason, with a count, newest first), `x-first-death-*` set once, `expiration`
/// removed. The body is shared, not copied.
pub(super) fn with_death(
    account: &Arc<dyn Account>,
    message: &Message,
    queue: &str,
    reason: &str,
    dlx: &str,
    routing_key: &str,
) -> Message {
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let is_entry = |t: &FieldTable| {
        matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.as_bytes() == queue.as_bytes())
            && matches!(t.inner().get("reason"), Some(AMQPValue::LongString(r)) if r.as_bytes() == reason.as_bytes())
    };
    let existing = deaths
        .iter()
        .position(|d| matches!(d, AMQPValue::FieldTable(t) if is_entry(t)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut entry = match existing.map(|i| deaths.remove(i)) {
        Some(AMQPValue::FieldTable(t)) => t,
        _ => FieldTable::default(),
    };
    let count = entry
        .inner()
        .get("count")
        .and_then(crate::field_value::as_i64)
        .unwrap_or(0)
        + 1;
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("reason".into(), AMQPValue::LongString(reason.into()));
    entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
    entry.insert("time".into(), AMQPValue::Timestamp(now));
    entry.insert(
        "exchange".into(),
        AMQPValue::LongString(message.exchange.as_str().into()),
    );
    let mut keys = FieldArray::default();
    keys.push(AMQPValue::LongString(message.routing_key.as_str().into()));
    entry.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
    if let Some(exp) = message.properties.expiration() {
        entry.insert(
            "original-expiration".into(),
            AMQPValue::LongString(exp.as_str().into()),
        );
    }
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    if !headers.contains_key("x-first-death-reason") {
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString(queue.into()),
        );
        headers.insert(
            "x-first-death-exchange".into(),
            AMQPValue::LongString(message.exchange.as_str().into()),
        );
    }
    let p = &message.properties;
    let mut properties = basic::AMQPProperties::default().with_headers(headers);
    macro_rules! copy {
        ($get:ident, $with:ident) => {
            if let Some(v) = p.$get().clone() {
                properties = properties.$with(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    Message::new(
        account,
        ShortString::try_new(dlx).unwrap_or_default(),
        ShortString::try_new(routing_key).unwrap_or_default(),
        properties,
        message.body.clone(),
        message.block().cloned(),
    )
}

impl VHost {
    /// Republishes dead letters of `queue` to its dead-letter exchange, with `x-death`.
    ///
    /// A persistent letter leaves `queue`'s store only after its copies are stored in the
    /// queues it is routed to (its `DeadLetter::stored` entry is forgotten last): a crash in
    /// between leaves it in both (a duplicate, as at-least-once allows), never in neither.
    pub(crate) fn dead_letter(&self, queue: &Arc<Queue>, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        let Some(dlx) = queue.config.dead_letter_exchange.clone() else {
            for letter in letters {
                letter.leave(queue);
            }
            return;
        };
        for letter in letters {
            let routing_key = queue
                .config
                .dead_letter_routing_key
                .clone()
                .unwrap_or_else(|| letter.message.routing_key.as_str().to_owned());
            let message = Arc::new(with_death(
                &self.account,
                &letter.message,
                &queue.name,
                letter.reason,
                &dlx,
                &routing_key,
            ));
            if !self.read().exchanges.contains_key(&dlx) {
                letter.leave(queue);
                continue;
            }
            let targets = self
                .route(&dlx, &routing_key, message.properties.headers().as_ref())
                .queues;
            // Read before any copy is appended: a write the store refuses after this may hold
            // a copy, and then the letter's remove is withheld (see `Persistence::remove_moved`).
            let refusals = self.store.refusals();
            let mut copies_stored = false;
            let mut copy_refused = false;
            for target in targets {
                // A message going round a cycle without a rejection in it is dropped, as
                // RabbitMQ does.
                if is_cycle(&message, &target.name) {
                    continue;
                }
                let outcome = self.enqueue(&target, message.clone());
                if let (crate::queue::EnqueueOutcome::Enqueued { seq }, true) =
                    (outcome, target.is_persisted() && message.is_persistent())
                {
                    // No publisher waits for a dead letter's durability; its removal from
                    // `queue`, appended after this, commits after it or not at all.
                    let durability =
                        self.store
                            .enqueue_dead_letter(&self.name, &target.name, seq, &message);
                    if let Durability::Pending(mut committed) = durability {
                        // A copy the store refused at once (its completion is gone already):
                        // not stored, so neither paged out nor followed by the remove.
                        if let Err(TryRecvError::Closed) = committed.try_recv() {
                            copy_refused = true;
                            continue;
                        }
                    }
                    copies_stored = true;
                    target.page_out(seq);
                }
            }
            if copy_refused {
                // The letter stays in `queue`'s log (it comes back after a restart, a
                // duplicate where other copies were stored): dropping it would lose it.
                tracing::warn!(
                    vhost = %self.name,
                    queue = %queue.name,
                    "dead-lettered copy refused by the store: the message stays in its queue's log"
                );
            } else if copies_stored {
                letter.leave_moved(queue, refusals);
            } else {
                letter.leave(queue);
            }
        }
    }
}
