//! The result message of a submitted task: what a worker publishes to the task's result queue
//! (see `task_handle`), and how `#[lepus::task]` picks the codecs of a task's output and error.
//!
//! # Task message headers (submit -> worker)
//! A task submitted with `submit` carries, besides the headers of `headers`:
//!
//! | header            | type | meaning                                                     |
//! |-------------------|------|-------------------------------------------------------------|
//! | [`RESULT_QUEUE`]  | `S`  | the queue to publish the result to (`lepus.result.<id>`)    |
//! | [`RESULT_TTL`]    | `l`  | its `x-expires` in ms (a worker that finds it gone redeclares it with this) |
//!
//! A task without them is run exactly as before: the worker publishes nothing.
//!
//! # Result message (worker -> result queue)
//! Published to the default exchange, routing key = [`RESULT_QUEUE`], persistent,
//! `content-type: application/msgpack`, `message-id` = the task's id:
//!
//! | header        | type | meaning                                                          |
//! |---------------|------|------------------------------------------------------------------|
//! | [`STATUS`]    | `S`  | `running`, `retrying`, `succeeded`, `failed`, `dead-lettered`    |
//! | `x-lepus-attempts` | `l` | the attempt this status is about (1 for the first run)      |
//! | `x-lepus-error` | `S` | the attempt's error text (`retrying`, `failed`, `dead-lettered`) |
//!
//! Body: for `succeeded`, the output as one MessagePack value (empty when the output type is
//! not a serde type); for `failed` (the function's own `Err` after the last attempt), the error
//! as one MessagePack value (typed for a serde error type, its `{:#}` text otherwise; empty when
//! it cannot be rebuilt); empty otherwise. `dead-lettered` is every other final failure: a
//! panic, the time limit, arguments that do not decode, the delivery limit.
//!
//! `running` and `retrying` are published without waiting for a confirm (they only inform
//! `status`); the final message is confirmed before the task is acked, so a worker that dies
//! in between runs the task again rather than losing its result. Readers take the message of
//! highest [`Status::rank`], so the order of the messages in the queue does not matter.

use std::fmt::Display;
use std::marker::PhantomData;

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use serde::{de::DeserializeOwned, Serialize};
use tracing::debug;

use crate::amqp::{publish_mandatory, returned_no_route};
use crate::error::Never;
use crate::remote_error::RemoteError;
use crate::task::headers;

/// The result queue of a submitted task (`S`).
pub const RESULT_QUEUE: &str = "x-lepus-result-queue";
/// The result queue's `x-expires`, in milliseconds (`l`).
pub const RESULT_TTL: &str = "x-lepus-result-ttl";
/// The status a result message reports (`S`).
pub const STATUS: &str = "x-lepus-status";

/// A status as it travels in [`STATUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// An attempt started.
    Running,
    /// An attempt failed; the task will run again.
    Retrying,
    /// The task returned `Ok`.
    Succeeded,
    /// The task's last attempt returned `Err`.
    Failed,
    /// The task was dead-lettered for another reason.
    DeadLettered,
}

impl Status {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::DeadLettered => "dead-lettered",
        }
    }

    /// The status named by a header value.
    pub fn parse(value: &str) -> Option<Status> {
        Some(match value {
            "running" => Status::Running,
            "retrying" => Status::Retrying,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "dead-lettered" => Status::DeadLettered,
            _ => return None,
        })
    }

    /// True for the statuses after which the task never runs again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::DeadLettered
        )
    }

    /// Orders the messages of one task: a final status above everything, then later attempts
    /// above earlier ones, `retrying` above `running` of the same attempt.
    pub fn rank(self, attempt: u32) -> (bool, u32, u8) {
        (self.is_final(), attempt, u8::from(self == Status::Retrying))
    }
}

/// The headers of a result message.
pub(crate) fn result_headers(status: Status, attempt: u32, error: Option<&str>) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(STATUS.into(), headers::long_string(status.as_str()));
    headers::insert_int(&mut table, headers::ATTEMPTS, i64::from(attempt));
    if let Some(error) = error {
        table.insert(
            headers::ERROR.into(),
            headers::long_string(&headers::bounded_error(error.to_owned())),
        );
    }
    table
}

/// The part of every result queue's name (after the client's queue prefix).
pub(crate) const RESULT_QUEUE_PART: &str = "lepus.result.";

/// Where a delivery's result goes: the result queue and its TTL in ms, when it was submitted.
/// A header naming any other queue (not a result queue) is ignored: a task message must not
/// make the worker publish into, or declare, a queue of its choosing.
pub(crate) fn destination(task_headers: Option<&FieldTable>) -> Option<(String, i64)> {
    let queue = headers::string(task_headers, RESULT_QUEUE)
        .filter(|q| q.contains(RESULT_QUEUE_PART) && q.len() <= 255)?;
    let ttl = headers::int(task_headers, RESULT_TTL)
        .filter(|t| *t > 0)
        .unwrap_or_else(|| crate::envelope::millis(crate::task::DEFAULT_RESULT_TTL));
    Some((queue, ttl))
}

/// One result message for the worker to publish.
pub(crate) struct ResultMessage<'a> {
    /// The result queue and its TTL in ms (from the task's headers).
    pub(crate) destination: &'a (String, i64),
    /// The task's name, sent in `x-lepus-method` (a workflow's result names its failing step).
    pub(crate) task: &'a str,
    /// Declare it as a quorum queue when it is gone.
    pub(crate) quorum: bool,
    /// The task's id.
    pub(crate) message_id: Option<&'a str>,
    pub(crate) status: Status,
    pub(crate) attempt: u32,
    pub(crate) error: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

impl ResultMessage<'_> {
    fn headers(&self) -> FieldTable {
        let mut table = result_headers(self.status, self.attempt, self.error);
        table.insert(
            crate::envelope::HEADER_METHOD.into(),
            headers::long_string(self.task),
        );
        table
    }

    fn properties(&self) -> BasicProperties {
        let mut properties = BasicProperties::default()
            .with_content_type(crate::envelope::CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_headers(self.headers());
        if let Some(id) = self.message_id {
            properties = properties.with_message_id(id.into());
        }
        properties
    }

    /// Publishes a status without waiting for its confirm (`running`, `retrying`: they only
    /// inform `status`); dropped by the broker if the result queue is gone.
    pub(crate) async fn publish_unconfirmed(&self, channel: &lapin::Channel) {
        let published = channel
            .basic_publish(
                "".into(),
                self.destination.0.as_str().into(),
                BasicPublishOptions::default(),
                self.body,
                self.properties(),
            )
            .await;
        match published {
            // The channel is in confirm mode: the confirm is awaited off the task's path.
            Ok(confirm) => drop(tokio::spawn(async move {
                let _ = confirm.await;
            })),
            Err(err) => debug!(cause = %err, "task status not published"),
        }
    }

    /// Publishes the final result and waits for its confirm; declares the result queue again
    /// (with the TTL the task carries) when the broker returned it because it expired.
    pub(crate) async fn publish_confirmed(&self, channel: &lapin::Channel) -> Result<(), String> {
        let (queue, ttl_ms) = self.destination;
        for round in 0..2 {
            let confirm = publish_mandatory(channel, queue.as_str(), self.body, self.properties())
                .await
                .map_err(|e| format!("publishing the result to {queue}: {e}"))?;
            match confirm.await {
                Ok(Confirmation::Ack(None)) => return Ok(()),
                Ok(confirmation) if returned_no_route(&confirmation) && round == 0 => {
                    crate::task::task_handle::declare_result_queue(
                        channel,
                        queue,
                        *ttl_ms,
                        self.quorum,
                    )
                    .await
                    .map_err(|e| format!("declaring {queue}: {e}"))?;
                }
                Ok(other) => return Err(format!("{queue} refused the result: {other:?}")),
                Err(err) => return Err(format!("confirm from {queue}: {err}")),
            }
        }
        Err(format!("the result was returned twice by {queue}"))
    }
}

/// Selects how a task's output travels (autoref specialization, as `remote_error::ErrWire`):
/// generated code calls `(&&&OutWire::<O>::NEW).encode_output(..)`.
pub struct OutWire<O>(PhantomData<fn() -> O>);

impl<O> OutWire<O> {
    /// The selector of `O`.
    pub const NEW: Self = OutWire(PhantomData);
}

/// Depth 2: a serde output travels as MessagePack.
pub trait OutSerde<O> {
    /// The output's bytes.
    fn encode_output(&self, output: &O) -> Option<Vec<u8>>;
    /// The output from its bytes.
    fn decode_output(&self, body: &[u8]) -> Result<O, String>;
}

impl<O: Serialize + DeserializeOwned> OutSerde<O> for &&OutWire<O> {
    fn encode_output(&self, output: &O) -> Option<Vec<u8>> {
        crate::envelope::encode_body(output)
    }

    fn decode_output(&self, body: &[u8]) -> Result<O, String> {
        crate::envelope::decode_bounded_text(body)
    }
}

/// Depth 1: any other output is not sent (its result says only "succeeded").
pub trait OutOpaque<O> {
    /// Nothing.
    fn encode_output(&self, output: &O) -> Option<Vec<u8>>;
    /// Always an error: the type cannot be rebuilt.
    fn decode_output(&self, body: &[u8]) -> Result<O, String>;
}

impl<O> OutOpaque<O> for &OutWire<O> {
    fn encode_output(&self, _: &O) -> Option<Vec<u8>> {
        None
    }

    fn decode_output(&self, _: &[u8]) -> Result<O, String> {
        Err(format!(
            "the task succeeded, but its output type {} is not a serde type and was not sent",
            std::any::type_name::<O>()
        ))
    }
}

/// Selects how a task's error travels in its result: generated code calls
/// `(&&&&&TaskErrWire::<E>::NEW).encode_error(..)`.
pub struct TaskErrWire<E>(PhantomData<fn() -> E>);

impl<E> TaskErrWire<E> {
    /// The selector of `E`.
    pub const NEW: Self = TaskErrWire(PhantomData);
}

/// Depth 4: [`Never`] (a plain output): there is no error.
pub trait TaskErrNever<E> {
    /// Unreachable.
    fn encode_error(&self, error: &E) -> Option<Vec<u8>>;
    /// Always an error.
    fn decode_error(&self, body: &[u8]) -> Result<E, String>;
}

impl TaskErrNever<Never> for &&&&TaskErrWire<Never> {
    fn encode_error(&self, error: &Never) -> Option<Vec<u8>> {
        match *error {}
    }

    fn decode_error(&self, _: &[u8]) -> Result<Never, String> {
        Err("the task returns no error, yet its result carries one".to_owned())
    }
}

/// Depth 3: a serde error travels typed.
pub trait TaskErrSerde<E> {
    /// The error's bytes.
    fn encode_error(&self, error: &E) -> Option<Vec<u8>>;
    /// The error from its bytes.
    fn decode_error(&self, body: &[u8]) -> Result<E, String>;
}

impl<E: Serialize + DeserializeOwned> TaskErrSerde<E> for &&&TaskErrWire<E> {
    fn encode_error(&self, error: &E) -> Option<Vec<u8>> {
        crate::envelope::encode_body(error)
    }

    fn decode_error(&self, body: &[u8]) -> Result<E, String> {
        crate::envelope::decode_bounded_text(body)
    }
}

/// Depth 2: an error rebuilt from its text (`anyhow::Error`, `io::Error`, ...).
pub trait TaskErrText<E> {
    /// The error's text as bytes.
    fn encode_error(&self, error: &E) -> Option<Vec<u8>>;
    /// The error rebuilt from its text.
    fn decode_error(&self, body: &[u8]) -> Result<E, String>;
}

impl<E: Display + From<RemoteError>> TaskErrText<E> for &&TaskErrWire<E> {
    fn encode_error(&self, error: &E) -> Option<Vec<u8>> {
        crate::envelope::encode_body(&format!("{error:#}"))
    }

    fn decode_error(&self, body: &[u8]) -> Result<E, String> {
        let text: String = crate::envelope::decode_bounded_text(body)?;
        Ok(E::from(RemoteError::new(text)))
    }
}

/// Depth 1: any other error travels as its text only (in `x-lepus-error`).
pub trait TaskErrOpaque<E> {
    /// Nothing.
    fn encode_error(&self, error: &E) -> Option<Vec<u8>>;
    /// Always an error: the type cannot be rebuilt.
    fn decode_error(&self, body: &[u8]) -> Result<E, String>;
}

impl<E> TaskErrOpaque<E> for &TaskErrWire<E> {
    fn encode_error(&self, _: &E) -> Option<Vec<u8>> {
        None
    }

    fn decode_error(&self, _: &[u8]) -> Result<E, String> {
        Err("the error type cannot be rebuilt from a result".to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
#[allow(clippy::needless_borrow)] // the extra references select the impl
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Opaque;

    #[test]
    fn outputs_and_errors_pick_their_codec_by_type() {
        let bytes = (&&&OutWire::<Vec<u32>>::NEW)
            .encode_output(&vec![1, 2])
            .unwrap();
        assert_eq!(
            (&&&OutWire::<Vec<u32>>::NEW).decode_output(&bytes).unwrap(),
            vec![1, 2]
        );
        assert!((&&&OutWire::<Opaque>::NEW).encode_output(&Opaque).is_none());
        assert!((&&&OutWire::<Opaque>::NEW).decode_output(&[]).is_err());

        let bytes = (&&&&&TaskErrWire::<String>::NEW)
            .encode_error(&"typed".to_owned())
            .unwrap();
        assert_eq!(
            (&&&&&TaskErrWire::<String>::NEW)
                .decode_error(&bytes)
                .unwrap(),
            "typed"
        );
        let io = std::io::Error::other("disk full");
        let bytes = (&&&&&TaskErrWire::<std::io::Error>::NEW)
            .encode_error(&io)
            .unwrap();
        let back = (&&&&&TaskErrWire::<std::io::Error>::NEW)
            .decode_error(&bytes)
            .unwrap();
        assert_eq!(back.to_string(), "disk full");
        assert!((&&&&&TaskErrWire::<Opaque>::NEW)
            .encode_error(&Opaque)
            .is_none());
        assert!((&&&&&TaskErrWire::<Never>::NEW).decode_error(&[]).is_err());
    }

    #[test]
    fn only_result_queues_are_destinations() {
        let with = |queue: &str| {
            let mut table = FieldTable::default();
            table.insert(RESULT_QUEUE.into(), headers::long_string(queue));
            headers::insert_int(&mut table, RESULT_TTL, 5_000);
            destination(Some(&table))
        };
        assert_eq!(
            with("p.lepus.result.abc"),
            Some(("p.lepus.result.abc".to_owned(), 5_000))
        );
        assert_eq!(with("emails"), None);
        assert_eq!(with(""), None);
        assert_eq!(destination(None), None);
    }

    #[test]
    fn final_statuses_outrank_every_attempt() {
        assert!(Status::Succeeded.rank(1) > Status::Running.rank(9));
        assert!(Status::Retrying.rank(2) > Status::Running.rank(2));
        assert!(Status::Running.rank(3) > Status::Retrying.rank(2));
        for s in [
            Status::Running,
            Status::Retrying,
            Status::Succeeded,
            Status::Failed,
            Status::DeadLettered,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
