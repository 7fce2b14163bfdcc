//! The queue arguments the broker acts on (`x-message-ttl`, `x-expires`, `x-max-length`,
//! `x-overflow`, dead-lettering, `x-max-priority`, `x-queue-mode`, `x-queue-type`,
//! `x-single-active-consumer`), parsed and
//! checked from `queue.declare` (406 on a bad value, as RabbitMQ), and the per-message
//! `expiration` check.

use std::borrow::Cow;

use super::queue_type::{type_name, QueueType};
use super::*;
use crate::field_value::{as_i64, as_string};
use crate::persistence::QueueDeclared;

/// What `x-overflow` says to do when `x-max-length`/`x-max-length-bytes` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Drop (dead-letter) the oldest messages to make room (the default).
    DropHead,
    /// Refuse the new message; a confirming publisher gets `basic.nack`.
    RejectPublish,
    /// Like `RejectPublish`, and dead-letter the refused message.
    RejectPublishDlx,
}

/// The queue arguments we act on, parsed from `queue.declare` arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueConfig {
    /// `x-message-ttl`: milliseconds a message may stay ready.
    pub(crate) message_ttl: Option<u64>,
    /// `x-expires`: milliseconds of disuse after which the queue is deleted.
    pub(crate) expires: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub(crate) max_length: Option<u64>,
    /// `x-max-length-bytes`: most ready body bytes.
    pub(crate) max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub(crate) overflow: Overflow,
    /// Whether `x-overflow` was given at all: RabbitMQ compares declared arguments, so an
    /// explicit `drop-head` is not equivalent to none.
    pub(crate) overflow_declared: bool,
    /// `x-dead-letter-exchange`.
    pub(crate) dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub(crate) dead_letter_routing_key: Option<String>,
    /// `x-max-priority` (capped at 255 levels as in RabbitMQ).
    pub(crate) max_priority: Option<u8>,
    /// `x-queue-mode` as declared (`default` or `lazy`). Kept only for the equivalence check
    /// of a redeclare, as RabbitMQ compares it: persistent messages of every durable queue
    /// are paged as lazy queues' are, whatever the mode.
    pub(crate) queue_mode: Option<String>,
    /// `x-queue-type`: which arguments the queue took and compares on a redeclare.
    pub(crate) queue_type: QueueType,
    /// `x-single-active-consumer: true`: one consumer at a time gets messages (see
    /// `Queue::next_consumer`); the others wait their turn.
    pub(crate) single_active_consumer: bool,
}

/// A declare argument refused (406 PRECONDITION_FAILED): the argument and what RabbitMQ says
/// about it after the queue's name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InvalidArgument {
    /// The argument.
    pub(crate) key: &'static str,
    /// The text after `invalid arg 'K' for queue 'Q' in vhost 'V'` (`: invalid_overflow`,
    /// ` of queue type rabbit_quorum_queue`, or nothing).
    pub(crate) detail: String,
}

impl InvalidArgument {
    fn new(key: &'static str, detail: impl Into<String>) -> Self {
        Self {
            key,
            detail: detail.into(),
        }
    }

    /// RabbitMQ's text for the refusal of this argument of `queue` in `vhost`.
    pub(crate) fn text(&self, queue: &str, vhost: &str) -> String {
        format!(
            "invalid arg '{}' for queue '{queue}' in vhost '{vhost}'{}",
            self.key, self.detail
        )
    }
}

impl QueueConfig {
    /// The declare arguments the broker acts on, as a table that [`Self::from_arguments`]
    /// parses back to the same config (what the store records for a queue made without one).
    pub(crate) fn to_arguments(&self) -> FieldTable {
        let mut table = FieldTable::default();
        let mut int = |key: &str, value: Option<u64>| {
            if let Some(v) = value {
                // Values come from a parse that accepted them as i64.
                table.insert(key.into(), AMQPValue::LongLongInt(v as i64));
            }
        };
        int("x-message-ttl", self.message_ttl);
        int("x-expires", self.expires);
        int("x-max-length", self.max_length);
        int("x-max-length-bytes", self.max_length_bytes);
        int("x-max-priority", self.max_priority.map(u64::from));
        let overflow = match self.overflow {
            Overflow::DropHead if self.overflow_declared => Some("drop-head"),
            Overflow::DropHead => None,
            Overflow::RejectPublish => Some("reject-publish"),
            Overflow::RejectPublishDlx => Some("reject-publish-dlx"),
        };
        let strings = [
            ("x-overflow", overflow.map(str::to_owned)),
            ("x-dead-letter-exchange", self.dead_letter_exchange.clone()),
            (
                "x-dead-letter-routing-key",
                self.dead_letter_routing_key.clone(),
            ),
            ("x-queue-mode", self.queue_mode.clone()),
            (
                "x-queue-type",
                (self.queue_type != QueueType::Classic).then(|| self.queue_type.name().to_owned()),
            ),
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                table.insert(key.into(), AMQPValue::LongString(v.as_str().into()));
            }
        }
        if self.single_active_consumer {
            table.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        table
    }

    /// Parses and validates declare arguments in RabbitMQ 3.10's order: `x-queue-type`, each
    /// argument's value, the arguments the queue type takes, then the classic queue's
    /// priority limit.
    pub(crate) fn from_arguments(args: &FieldTable) -> Result<Self, InvalidArgument> {
        let queue_type = QueueType::from_arguments(args)
            .map_err(|text| InvalidArgument::new("x-queue-type", format!(": {text}")))?;
        let int = |key: &'static str, min: i64| -> Result<Option<u64>, InvalidArgument> {
            match args.inner().get(key) {
                None => Ok(None),
                Some(v) => match as_i64(v) {
                    Some(n) if n >= min => Ok(Some(n as u64)),
                    _ => Err(InvalidArgument::new(key, "")),
                },
            }
        };
        let string = |key: &'static str| -> Result<Option<String>, InvalidArgument> {
            match args.inner().get(key) {
                None => Ok(None),
                Some(v) => as_string(v)
                    .map(Some)
                    .ok_or_else(|| InvalidArgument::new(key, "")),
            }
        };
        let overflow_declared = args.inner().contains_key("x-overflow");
        let overflow = match string("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(_) => return Err(InvalidArgument::new("x-overflow", ": invalid_overflow")),
        };
        let dead_letter_exchange = string("x-dead-letter-exchange")?;
        let dead_letter_routing_key = string("x-dead-letter-routing-key")?;
        if dead_letter_routing_key.is_some() && dead_letter_exchange.is_none() {
            // RabbitMQ: a dead-letter routing key needs a dead-letter exchange.
            return Err(InvalidArgument::new(
                "x-dead-letter-routing-key",
                ": routing_key_but_no_dlx_defined",
            ));
        }
        let queue_mode = string("x-queue-mode")?;
        if queue_mode
            .as_deref()
            .is_some_and(|m| m != "default" && m != "lazy")
        {
            return Err(InvalidArgument::new("x-queue-mode", ": invalid_queue_mode"));
        }
        let single_active_consumer = match args.inner().get("x-single-active-consumer") {
            None => false,
            Some(AMQPValue::Boolean(on)) => *on,
            Some(v) => {
                return Err(InvalidArgument::new(
                    "x-single-active-consumer",
                    format!(": {{unacceptable_type,{}}}", type_name(v)),
                ))
            }
        };
        let max_priority = int("x-max-priority", 0)?;
        // RabbitMQ 3.10's quorum queues know no reject-publish-dlx: they log a warning and
        // drop from the head instead.
        let overflow = match overflow {
            Overflow::RejectPublishDlx if queue_type == QueueType::Quorum => Overflow::DropHead,
            other => other,
        };
        let config = Self {
            message_ttl: capped(int("x-message-ttl", 0)?, "x-message-ttl")?,
            expires: capped(int("x-expires", 1)?, "x-expires")?,
            max_length: int("x-max-length", 0)?,
            max_length_bytes: int("x-max-length-bytes", 0)?,
            overflow,
            overflow_declared,
            dead_letter_exchange,
            dead_letter_routing_key,
            max_priority: max_priority.map(|p| p.min(255) as u8),
            queue_mode,
            queue_type,
            single_active_consumer,
        };
        if let Some(key) = queue_type.refused_argument(args) {
            return Err(InvalidArgument::new(
                key,
                format!(" of queue type {}", queue_type.module()),
            ));
        }
        if let Some(p) = max_priority.filter(|p| *p > 255) {
            // RabbitMQ (the classic queue's own check, after the type's): at most 255
            // priorities.
            return Err(InvalidArgument::new(
                "x-max-priority",
                format!(": {{max_value_exceeded,{p}}}"),
            ));
        }
        Ok(config)
    }
}

/// The longest TTL or expiry RabbitMQ accepts: ten years, in milliseconds.
pub(crate) const MAX_EXPIRY_MS: u64 = 315_360_000_000;

pub(super) fn capped(
    value: Option<u64>,
    key: &'static str,
) -> Result<Option<u64>, InvalidArgument> {
    match value {
        Some(n) if n > MAX_EXPIRY_MS => Err(InvalidArgument::new(
            key,
            format!(": {{value_too_large,{n}}}"),
        )),
        other => Ok(other),
    }
}

/// Checks a per-message `expiration` property as RabbitMQ does; the error is the 406 text.
pub(crate) fn check_expiration(expiration: &str) -> Result<(), String> {
    match expiration.parse::<i128>() {
        Err(_) => Err(format!("invalid expiration '{expiration}': no_integer")),
        Ok(n) if n < 0 => Err(format!(
            "invalid expiration '{expiration}': {{value_negative,{n}}}"
        )),
        Ok(n) if n > i128::from(MAX_EXPIRY_MS) => Err(format!(
            "invalid expiration '{expiration}': {{value_too_large,{n}}}"
        )),
        Ok(_) => Ok(()),
    }
}

impl Queue {
    /// This queue as the store records its declaration: the declared table (it parsed into
    /// `config` when declared), or for a queue made without one the table its config stands
    /// for.
    pub(crate) fn declared(&self) -> QueueDeclared<'_> {
        QueueDeclared {
            name: &self.name,
            auto_delete: self.auto_delete,
            arguments: if self.arguments.inner().is_empty() {
                Cow::Owned(self.config.to_arguments())
            } else {
                Cow::Borrowed(&self.arguments)
            },
        }
    }
}
