//! [`RateLimit`]: at most `n` runs of a handler per period, per worker, and the [`Limiter`]
//! each worker keeps for it.
//!
//! # Per worker, as in Celery
//! A limit of 20/s lets each worker start 20 runs of the task a second, so a pool of `w`
//! workers runs at most `20·w` a second (Celery's `rate_limit` is per worker instance too).
//! A pool-wide limit needs a shared source of permits, and a broker has no cheap one that
//! RabbitMQ also has; to bound the whole pool, divide the limit by the number of workers (or
//! run the limited task on a worker of its own).
//!
//! # Not blocking the rest of the pool
//! A delivery over the limit gives its concurrency slot back while it waits for its turn, so
//! the worker's other handlers keep running; it still holds its place in the prefetch of its
//! queue's consumer, so put a rate-limited task on a queue of its own (the default: each task
//! names its queue) and other tasks are not delayed. The limiter spaces runs evenly
//! (`period / n` apart, no burst): over any window of `t` seconds a worker starts at most
//! `n·t/period + 1` runs.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most `count` runs per `period` (per worker; see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    count: u32,
    period: Duration,
}

impl RateLimit {
    /// `count` runs per `period` (`count` at least 1, `period` at least 1 ms).
    pub fn new(count: u32, period: Duration) -> Self {
        RateLimit {
            count: count.max(1),
            period: period.max(Duration::from_millis(1)),
        }
    }

    /// `count` runs a second.
    pub fn per_second(count: u32) -> Self {
        RateLimit::new(count, Duration::from_secs(1))
    }

    /// The time between two runs.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period.as_secs() {
            1 if self.period.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if self.period.subsec_nanos() == 0 => write!(f, "{}/m", self.count),
            3600 if self.period.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/{:?}", self.count, self.period),
        }
    }
}

/// Why a rate limit does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit {0:?}: expected <count>/<s|m|h>, e.g. \"20/s\"")]
pub struct ParseRateLimitError(String);

impl FromStr for RateLimit {
    type Err = ParseRateLimitError;

    /// `"20/s"`, `"100/m"`, `"5/h"` (Celery's notation).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseRateLimitError(s.to_owned());
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(RateLimit::new(count, period))
    }
}

/// One worker's limiter for one handler: hands out evenly spaced start times.
#[derive(Debug)]
pub(crate) struct Limiter {
    interval: Duration,
    /// The earliest start time not handed out yet.
    next: Mutex<Instant>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Limiter {
            interval: limit.interval(),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Takes the next start time and waits for it.
    pub(crate) async fn wait(&self) {
        let at = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn parses_celery_notation() {
        assert_eq!("20/s".parse(), Ok(RateLimit::per_second(20)));
        assert_eq!(
            "100/m".parse(),
            Ok(RateLimit::new(100, Duration::from_secs(60)))
        );
        assert_eq!(
            RateLimit::per_second(20).interval(),
            Duration::from_millis(50)
        );
        assert_eq!(RateLimit::per_second(20).to_string(), "20/s");
        for bad in ["", "20", "x/s", "0/s", "20/d", "-1/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_runs_evenly() {
        let limiter = Limiter::new(RateLimit::per_second(10));
        let start = Instant::now();
        for _ in 0..11 {
            limiter.wait().await;
        }
        // 11 runs: the first at once, then one every 100 ms.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
