//! Delay queues: how a retried or delayed task waits without sitting in anyone's prefetch.
//!
//! A task delayed by `d` is published to `<queue>.delay.<d in ms>`, a durable queue with no
//! consumer, declared with `x-message-ttl = d`, `x-dead-letter-exchange = ""` and
//! `x-dead-letter-routing-key = <queue>`: when the message has waited `d` the broker
//! dead-letters it back onto the task queue. Every message of a delay queue has the same TTL,
//! so the queue's head always expires first (per-message TTLs in one queue would not: RabbitMQ
//! only expires messages at the head). A delay queue expires (`x-expires = d + 60 s`) once
//! unused; it is redeclared at least every 30 s while in use, so it never expires with a
//! message inside (publishing does not reset `x-expires`, declaring does).
//!
//! Retry delays are jittered but must fall on few queues: retry `n` (0-based) waits
//! `c·k/8` for a random `k` in 4..=8, `c = min(initial·2ⁿ, max)`, so at most five delay queues
//! exist per backoff level.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use rand::Rng;

use crate::amqp::declare_durable;
use crate::backoff::Backoff;
use crate::envelope::millis;
use crate::task::headers::long_string;

/// How long a delay queue lives unused beyond its TTL (`x-expires = ttl + this`).
const EXPIRES_MARGIN: Duration = Duration::from_secs(60);

/// A declaration of a delay queue older than this is renewed before the next publish to it.
pub(crate) const REDECLARE_AFTER: Duration = Duration::from_secs(30);

/// The delay before retry number `retry` (0-based), jittered onto one of five buckets.
pub(crate) fn retry_delay(backoff: &Backoff, retry: u32) -> Duration {
    let ceiling = backoff.ceiling(retry);
    let eighths = rand::rng().random_range(4..=8u32);
    bucket(ceiling, eighths)
}

/// `ceiling·eighths/8`, rounded down to whole milliseconds (at least 1 ms).
fn bucket(ceiling: Duration, eighths: u32) -> Duration {
    let ms = ceiling.as_millis().saturating_mul(u128::from(eighths)) / 8;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX).max(1))
}

/// `<queue>.delay.<ms>`.
pub(crate) fn delay_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.delay.{}", millis(delay))
}

/// Declares the delay queue that holds messages for `delay` and then puts them on `queue`.
pub(crate) async fn declare_delay_queue(
    channel: &lapin::Channel,
    queue: &str,
    delay: Duration,
) -> lapin::Result<String> {
    let name = delay_queue_name(queue, delay);
    declare_durable(channel, name.as_str(), delay_queue_arguments(queue, delay)).await?;
    Ok(name)
}

/// The arguments of a delay queue (see the module documentation).
fn delay_queue_arguments(queue: &str, delay: Duration) -> FieldTable {
    let ttl = millis(delay);
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(ttl.saturating_add(millis(EXPIRES_MARGIN))),
    );
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(queue));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_stay_in_the_jitter_band_and_use_five_buckets() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let d = retry_delay(&backoff, 0);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
            seen.insert(d);
        }
        assert!(seen.len() <= 5, "{seen:?}");
        for _ in 0..100 {
            let d = retry_delay(&backoff, 10);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        }
        assert_eq!(
            bucket(Duration::from_millis(100), 8),
            Duration::from_millis(100)
        );
        assert_eq!(
            bucket(Duration::from_millis(100), 4),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn delay_queues_dead_letter_back_to_the_task_queue() {
        let args = delay_queue_arguments("emails", Duration::from_millis(250));
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongLongInt(250)));
        assert_eq!(get("x-expires"), Some(AMQPValue::LongLongInt(60_250)));
        assert_eq!(
            get("x-dead-letter-routing-key"),
            Some(long_string("emails"))
        );
        assert_eq!(
            delay_queue_name("emails", Duration::from_millis(250)),
            "emails.delay.250"
        );
    }
}
