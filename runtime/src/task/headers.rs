//! The wire format of a task message: what `enqueue` publishes and what the worker adds when
//! it retries or dead-letters a task, so that other languages can enqueue Lepus tasks and read
//! dead letters.
//!
//! # Task message (enqueue -> worker)
//! Published to the default exchange `""`, routing key = the task queue, `mandatory = true`,
//! on a channel in confirm mode (the enqueue returns after `basic.ack`).
//!
//! | property         | value                                                               |
//! |------------------|---------------------------------------------------------------------|
//! | `content-type`   | `application/msgpack`                                               |
//! | `delivery-mode`  | 2 (persistent)                                                      |
//! | `message-id`     | the caller's id, or 32 lowercase hex digits (a v4 UUID)             |
//! | `timestamp`      | enqueue time, Unix seconds                                          |
//! | `priority`       | optional, honoured when the queue has `x-max-priority`             |
//! | headers          | `x-lepus-method` (`S`, the task name), [`ENQUEUED_AT`] (`l`); inside a handler's context also `x-lepus-trace-id` (`S`) |
//!
//! Body: the arguments as one MessagePack array, exactly as an RPC request (see `envelope`).
//!
//! # Headers the worker adds after a failed attempt
//! | header                 | type | meaning                                                  |
//! |------------------------|------|----------------------------------------------------------|
//! | [`ATTEMPTS`]           | `l`  | attempts made so far (absent = 0)                        |
//! | [`ERROR`]              | `S`  | the last attempt's error (`Display` text, panic message) |
//! | [`FIRST_FAILED_AT`]    | `l`  | Unix ms of the first failure                             |
//! | [`LAST_FAILED_AT`]     | `l`  | Unix ms of the last failure                              |
//! | [`ORIGIN_QUEUE`]       | `S`  | the task queue (to requeue a dead letter into)          |
//! | [`RETRY_DELAY`]        | `l`  | ms waited before this retry (retries only)               |
//!
//! A retry copy goes to a delay queue (see `retry_delay`), a dead letter to the dead-letter
//! queue; RabbitMQ's own `x-death` and `x-first-death-*` headers are dropped from the copies.
//!
//! # Sizes
//! [`ERROR`] holds at most [`MAX_ERROR_LEN`] bytes (longer texts are cut at a character
//! boundary, with a note of how much was cut). A copy's content header must fit the
//! connection's `frame_max` (131,072 bytes by default; a larger one makes the broker close the
//! connection): a retry copy that would not fit goes to the dead-letter queue instead, and a
//! dead letter that would not fit loses the task's own headers, largest first, until it does;
//! [`DROPPED_HEADERS`] then names them.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Attempts made so far (`l`).
pub const ATTEMPTS: &str = "x-lepus-attempts";
/// The last attempt's error text (`S`).
pub const ERROR: &str = "x-lepus-error";
/// Unix milliseconds of the enqueue (`l`).
pub const ENQUEUED_AT: &str = "x-lepus-enqueued-at";
/// Unix milliseconds of the first failure (`l`).
pub const FIRST_FAILED_AT: &str = "x-lepus-first-failed-at";
/// Unix milliseconds of the last failure (`l`).
pub const LAST_FAILED_AT: &str = "x-lepus-last-failed-at";
/// The task queue a retry or dead letter came from (`S`).
pub const ORIGIN_QUEUE: &str = "x-lepus-origin-queue";
/// The delay before this retry, in milliseconds (`l`).
pub const RETRY_DELAY: &str = "x-lepus-retry-delay";
/// The headers of the task dropped to fit its dead letter in a frame (`S`, comma-separated).
pub const DROPPED_HEADERS: &str = "x-lepus-dropped-headers";

/// The longest error text a worker records or sends, in bytes.
pub const MAX_ERROR_LEN: usize = 4096;

/// Headers the broker adds on dead-lettering that a copy does not carry over.
const BROKER_DEATH_HEADERS: [&str; 4] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
];

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    crate::envelope::deadline_after(Duration::ZERO)
}

/// Reads an integer header of any AMQP integer type.
pub fn int(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

/// Reads a string header (long or short string).
pub fn string(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The attempts a delivery records (0 for a fresh task).
pub fn attempts(headers: Option<&FieldTable>) -> u32 {
    int(headers, ATTEMPTS)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The headers of the copy made after failed attempt number `attempts`: the original's
/// headers without the broker's death records, plus the failure record.
pub(crate) fn after_failure(
    original: Option<&FieldTable>,
    attempts: u32,
    error: &str,
    origin_queue: &str,
) -> FieldTable {
    let now = now_ms();
    let mut headers = FieldTable::default();
    if let Some(original) = original {
        for (key, value) in original.inner() {
            if !BROKER_DEATH_HEADERS.contains(&key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    let first = int(original, FIRST_FAILED_AT).unwrap_or(now);
    headers.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(attempts.into()));
    headers.insert(ERROR.into(), long_string(&bounded_error(error.to_owned())));
    headers.insert(FIRST_FAILED_AT.into(), AMQPValue::LongLongInt(first));
    headers.insert(LAST_FAILED_AT.into(), AMQPValue::LongLongInt(now));
    headers.insert(ORIGIN_QUEUE.into(), long_string(origin_queue));
    headers
}

/// `text` cut to at most [`MAX_ERROR_LEN`] bytes, at a character boundary, with a note of the
/// bytes cut.
pub(crate) fn bounded_error(mut text: String) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text;
    }
    let total = text.len();
    // Room for the note, which is at most 40 bytes.
    let mut cut = MAX_ERROR_LEN - 40;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("... ({} more bytes cut)", total - cut));
    text
}

/// Drops headers from `properties` that the worker did not add (`x-lepus-*`), largest first,
/// until its content header fits a frame of `frame_max` bytes; returns the names dropped
/// (recorded in [`DROPPED_HEADERS`]).
pub(crate) fn fit_to_frame(properties: &mut lapin::BasicProperties, frame_max: u32) -> Vec<String> {
    let mut dropped = Vec::new();
    let Some(mut table) = properties.headers().clone() else {
        return dropped;
    };
    while !crate::properties_size::fits(properties, frame_max) {
        let largest = table
            .inner()
            .iter()
            .filter(|(key, _)| !key.as_str().starts_with("x-lepus-"))
            .map(|(key, value)| {
                let mut one = FieldTable::default();
                one.insert(key.clone(), value.clone());
                (crate::properties_size::table_len(&one), key.clone())
            })
            .max_by_key(|(len, _)| *len);
        let Some((_, key)) = largest else {
            break; // only the failure record is left
        };
        let mut kept = FieldTable::default();
        for (k, v) in table.inner() {
            if *k != key {
                kept.insert(k.clone(), v.clone());
            }
        }
        dropped.push(key.to_string());
        let names = bounded_error(dropped.join(","));
        kept.insert(DROPPED_HEADERS.into(), long_string(&names));
        table = kept;
        *properties = properties.clone().with_headers(table.clone());
    }
    dropped
}

/// The headers of a dead letter sent back to its queue: the failure record removed, so the
/// task gets its full number of attempts again.
pub(crate) fn for_requeue(original: Option<&FieldTable>) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(original) = original {
        for (key, value) in original.inner() {
            let key_str = key.as_str();
            let dropped = BROKER_DEATH_HEADERS.contains(&key_str)
                || [
                    ATTEMPTS,
                    ERROR,
                    FIRST_FAILED_AT,
                    LAST_FAILED_AT,
                    RETRY_DELAY,
                ]
                .contains(&key_str);
            if !dropped {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    headers
}

/// An AMQP long string value.
pub(crate) fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Inserts `name = value` (`l`).
pub(crate) fn insert_int(headers: &mut FieldTable, name: &str, value: i64) {
    headers.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_failure_record_counts_attempts_and_keeps_the_first_failure_time() {
        let mut original = FieldTable::default();
        original.insert("x-lepus-method".into(), long_string("send_email"));
        original.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let first = after_failure(Some(&original), 1, "smtp down", "emails");
        assert_eq!(attempts(Some(&first)), 1);
        assert_eq!(string(Some(&first), ERROR).as_deref(), Some("smtp down"));
        assert_eq!(
            string(Some(&first), "x-lepus-method").as_deref(),
            Some("send_email")
        );
        assert!(first.inner().get("x-death").is_none());
        let started = int(Some(&first), FIRST_FAILED_AT);
        let second = after_failure(Some(&first), 2, "still down", "emails");
        assert_eq!(attempts(Some(&second)), 2);
        assert_eq!(int(Some(&second), FIRST_FAILED_AT), started);
        let requeued = for_requeue(Some(&second));
        assert_eq!(attempts(Some(&requeued)), 0);
        assert!(string(Some(&requeued), ERROR).is_none());
        assert_eq!(
            string(Some(&requeued), ORIGIN_QUEUE).as_deref(),
            Some("emails")
        );
    }

    #[test]
    fn error_texts_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded_error("short".into()), "short");
        let long = "é".repeat(10_000); // 20,000 bytes
        let cut = bounded_error(long);
        assert!(cut.len() <= MAX_ERROR_LEN, "{}", cut.len());
        assert!(cut.ends_with("more bytes cut)"), "{cut}");
        let record = after_failure(None, 1, &"x".repeat(200_000), "emails");
        assert!(string(Some(&record), ERROR).unwrap().len() <= MAX_ERROR_LEN);
    }

    #[test]
    fn oversized_task_headers_are_dropped_largest_first_to_fit_a_frame() {
        let mut original = FieldTable::default();
        original.insert("big".into(), long_string(&"x".repeat(130 * 1024)));
        original.insert("small".into(), long_string("kept"));
        let record = after_failure(Some(&original), 1, "boom", "emails");
        let mut properties = lapin::BasicProperties::default().with_headers(record);
        assert!(!crate::properties_size::fits(&properties, 131_072));
        let dropped = fit_to_frame(&mut properties, 131_072);
        assert_eq!(dropped, vec!["big".to_owned()]);
        assert!(crate::properties_size::fits(&properties, 131_072));
        let h = properties.headers().as_ref();
        assert_eq!(string(h, "small").as_deref(), Some("kept"));
        assert_eq!(string(h, ERROR).as_deref(), Some("boom"));
        assert_eq!(string(h, DROPPED_HEADERS).as_deref(), Some("big"));
    }
}
