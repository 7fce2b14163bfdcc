//! The queue arguments the broker acts on (`x-message-ttl`, `x-expires`, `x-max-length`,
//! `x-overflow`, dead-lettering, `x-max-priority`, `x-queue-mode`), parsed and checked from
//! `queue.declare` (406 on a bad value, as RabbitMQ), and the per-message `expiration` check.

use std::borrow::Cow;

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
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                table.insert(key.into(), AMQPValue::LongString(v.as_str().into()));
            }
        }
        table
    }

    /// Parses and validates declare arguments; the error is the 406 detail text.
    pub(crate) fn from_arguments(args: &FieldTable) -> Result<Self, String> {
        let int = |key: &str, min: i64| -> Result<Option<u64>, String> {
            match args.inner().get(key) {
                None => Ok(None),
                Some(v) => match as_i64(v) {
                    Some(n) if n >= min => Ok(Some(n as u64)),
                    _ => Err(format!("invalid arg '{key}' for queue")),
                },
            }
        };
        let string = |key: &str| -> Result<Option<String>, String> {
            match args.inner().get(key) {
                None => Ok(None),
                Some(v) => as_string(v)
                    .map(Some)
                    .ok_or_else(|| format!("invalid arg '{key}' for queue")),
            }
        };
        let overflow_declared = args.inner().contains_key("x-overflow");
        let overflow = match string("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(other) => return Err(format!("invalid arg 'x-overflow' for queue: '{other}'")),
        };
        let dead_letter_exchange = string("x-dead-letter-exchange")?;
        let dead_letter_routing_key = string("x-dead-letter-routing-key")?;
        if dead_letter_routing_key.is_some() && dead_letter_exchange.is_none() {
            // RabbitMQ: a dead-letter routing key needs a dead-letter exchange.
            return Err(
                "invalid arg 'x-dead-letter-routing-key' for queue: routing_key_but_no_dlx_defined"
                    .to_owned(),
            );
        }
        let queue_mode = string("x-queue-mode")?;
        if queue_mode
            .as_deref()
            .is_some_and(|m| m != "default" && m != "lazy")
        {
            return Err("invalid arg 'x-queue-mode' for queue: invalid_queue_mode".to_owned());
        }
        let max_priority = int("x-max-priority", 0)?;
        if let Some(p) = max_priority.filter(|p| *p > 255) {
            // RabbitMQ: at most 255 priorities ({max_value_exceeded, N}).
            return Err(format!(
                "invalid arg 'x-max-priority' for queue: {{max_value_exceeded,{p}}}"
            ));
        }
        Ok(Self {
            message_ttl: capped(int("x-message-ttl", 0)?, "x-message-ttl")?,
            expires: capped(int("x-expires", 1)?, "x-expires")?,
            max_length: int("x-max-length", 0)?,
            max_length_bytes: int("x-max-length-bytes", 0)?,
            overflow,
            overflow_declared,
            dead_letter_exchange,
            dead_letter_routing_key,
            max_priority: max_priority.map(|p| p as u8),
            queue_mode,
        })
    }
}

/// The longest TTL or expiry RabbitMQ accepts: ten years, in milliseconds.
pub(crate) const MAX_EXPIRY_MS: u64 = 315_360_000_000;

pub(super) fn capped(value: Option<u64>, key: &str) -> Result<Option<u64>, String> {
    match value {
        Some(n) if n > MAX_EXPIRY_MS => Err(format!(
            "invalid arg '{key}' for queue: {{value_too_large,{n}}}"
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
