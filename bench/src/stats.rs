//! Shared counters of a run, latency histograms, and the once-a-second progress line.
//!
//! Producers and consumers bump [`Counters`] (relaxed atomics: each is a plain tally read by the
//! progress task and at the end). Each consumer or caller records latencies in its own
//! [`Latency`] histogram and merges it into the run's at the end, so no lock is taken per
//! message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::proc_stat::Proc;

/// The bench's time origin: message timestamps are nanoseconds since this instant, which every
/// producer and consumer of the process shares.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the bench's time origin (what producers write into a body).
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Tallies of one run, shared by every producer, consumer and the progress task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Messages (or calls) handed to the client library for publishing.
    pub(crate) published: AtomicU64,
    /// Publishes the broker confirmed (`basic.ack` in confirm mode).
    pub(crate) confirmed: AtomicU64,
    /// Deliveries received by consumers (or replies received by callers).
    pub(crate) consumed: AtomicU64,
    /// `now_ns()` of the latest delivery, to end the "out" interval at the last message.
    pub(crate) last_consume_ns: AtomicU64,
}

impl Counters {
    /// Counts one delivery received now.
    pub(crate) fn delivered(&self, n: u64) {
        self.consumed.fetch_add(n, Ordering::Relaxed);
        self.last_consume_ns.fetch_max(now_ns(), Ordering::Relaxed);
    }

    /// Reads a counter.
    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Waits until `expected` deliveries were counted, polling every `poll`, or until none
    /// arrived for `stall` (then warns and returns: the report shows what is missing).
    pub(crate) async fn wait_for_deliveries(&self, expected: u64, poll: Duration, stall: Duration) {
        let mut last = (Counters::get(&self.consumed), Instant::now());
        while Counters::get(&self.consumed) < expected {
            tokio::time::sleep(poll).await;
            let now = Counters::get(&self.consumed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > stall {
                tracing::warn!(
                    expected,
                    received = now,
                    "deliveries stalled for {stall:?}; ending the wait"
                );
                break;
            }
        }
    }
}

/// Sets `stop` after `secs` seconds (the end of a `--duration` run).
pub(crate) fn stop_after(stop: &Arc<AtomicBool>, secs: f64) {
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
    });
}

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits).
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        // 1..=3.6e9 µs at 3 significant figures are valid bounds, so construction cannot fail;
        // the fallback keeps the type total anyway.
        Latency(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .or_else(|_| Histogram::new(3))
                .unwrap_or_else(|_| unreachable!("3 significant figures is within 0..=5")),
        )
    }

    /// Records the time from `sent_ns` (a [`now_ns`] value) to now.
    pub(crate) fn record_since(&mut self, sent_ns: u64) {
        let us = now_ns().saturating_sub(sent_ns) / 1000;
        self.0.saturating_record(us.max(1));
    }

    /// Adds another histogram's samples.
    pub(crate) fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so `add` cannot fail on range; ignore the rest.
        let _ = self.0.add(&other.0);
    }

    /// Percentiles, or `None` when nothing was recorded.
    pub(crate) fn summary(&self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: self.0.len(),
            p50_us: self.0.value_at_quantile(0.50),
            p95_us: self.0.value_at_quantile(0.95),
            p99_us: self.0.value_at_quantile(0.99),
            max_us: self.0.max(),
        })
    }
}

/// A run's latency in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct LatencySummary {
    /// Samples recorded.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_us: u64,
    /// 95th percentile.
    pub(crate) p95_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// Largest sample.
    pub(crate) max_us: u64,
}

/// The run's merged histogram: each consumer merges its own into it when it finishes.
pub(crate) type SharedLatency = Arc<Mutex<Latency>>;

/// Merges `local` into `shared` (a poisoned lock only means another task panicked mid-merge;
/// the histogram is still usable).
pub(crate) fn merge_into(shared: &SharedLatency, local: &Latency) {
    let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
    guard.merge(local);
}

/// Prints one progress line per second on stderr until aborted.
pub(crate) fn spawn_progress(
    label: &'static str,
    counters: Arc<Counters>,
    broker_pid: Option<u32>,
    quiet: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut p0, mut c0, mut k0) = (0, 0, 0);
        let broker = broker_pid.map(Proc::Pid);
        let mut cpu0 = broker.and_then(Proc::cpu_seconds);
        loop {
            tick.tick().await;
            let p = Counters::get(&counters.published);
            let c = Counters::get(&counters.consumed);
            let k = Counters::get(&counters.confirmed);
            let cpu = broker.and_then(Proc::cpu_seconds);
            let cpu_txt = match (cpu, cpu0) {
                (Some(now), Some(before)) => {
                    format!("  broker cpu {:>3.0}%", (now - before) * 100.0)
                }
                _ => String::new(),
            };
            cpu0 = cpu;
            let confirmed = if k > 0 {
                format!("  confirmed {:>9}/s", k - k0)
            } else {
                String::new()
            };
            eprintln!(
                "[{label} {:>4}s] in {:>9}/s  out {:>9}/s{confirmed}  backlog {:>9}{cpu_txt}",
                start.elapsed().as_secs(),
                p - p0,
                c - c0,
                p.saturating_sub(c),
            );
            (p0, c0, k0) = (p, c, k);
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_samples() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for v in 1..=100u64 {
            a.0.record(v).unwrap();
        }
        b.0.record(10_000).unwrap();
        a.merge(&b);
        let s = a.summary().unwrap();
        assert_eq!(s.count, 101);
        assert_eq!(s.p50_us, 51);
        assert_eq!(s.max_us, 10_007); // 3 significant digits: the bucket's highest equivalent value
        assert!(Latency::new().summary().is_none());
    }
}
