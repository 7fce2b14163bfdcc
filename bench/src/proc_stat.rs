//! Resource use of a process from Linux `/proc`: CPU seconds (`utime + stime` in
//! `/proc/PID/stat`) and resident memory (`VmRSS`, `VmHWM` in `/proc/PID/status`).
//!
//! The broker is sampled by PID (`--broker-pid`); the bench samples itself through
//! `/proc/self`. A background task samples `VmRSS` every 100 ms and keeps the maximum, because
//! `VmHWM` is the peak over the process's whole life (across earlier runs against the same
//! RabbitMQ), not this run's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

/// Clock ticks per second of `/proc/PID/stat`'s time fields. Linux reports them in USER_HZ,
/// which the kernel fixes at 100 on every architecture it exposes to user space (reading
/// `sysconf(_SC_CLK_TCK)` would need `unsafe` FFI for the same constant).
const USER_HZ: f64 = 100.0;

/// Which process to read: ourselves or another one by PID.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proc {
    /// `/proc/self`.
    SelfProc,
    /// `/proc/PID`.
    Pid(u32),
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::SelfProc => format!("/proc/self/{file}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    /// CPU seconds (user + system) the process has used so far; `None` if it is gone.
    pub(crate) fn cpu_seconds(self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // `comm` (field 2) is in parentheses and may hold spaces: split after the last ')'.
        // What follows starts at field 3 (`state`), so field N is at index N - 3.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
        let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
        Some((utime + stime) as f64 / USER_HZ)
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`) in bytes.
    pub(crate) fn status_bytes(self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

/// Samples a process's RSS in the background and remembers the peak.
#[derive(Debug)]
pub(crate) struct RssSampler {
    /// Largest `VmRSS` seen, in bytes. The sampling task holds the other `Arc`.
    peak: Arc<AtomicU64>,
    /// The sampling task; aborted by [`RssSampler::stop`] (and on drop of the runtime).
    task: JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `proc` every 100 ms.
    pub(crate) fn start(proc: Proc) -> Self {
        let peak = Arc::new(AtomicU64::new(proc.status_bytes("VmRSS:").unwrap_or(0)));
        let peak2 = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Some(rss) = proc.status_bytes("VmRSS:") {
                    peak2.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        RssSampler { peak, task }
    }

    /// Stops sampling and returns the peak RSS seen, in bytes.
    pub(crate) fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// CPU and memory of the broker and of the bench over one run.
#[derive(Debug)]
pub(crate) struct ResourceProbe {
    broker: Option<Proc>,
    broker_cpu0: Option<f64>,
    self_cpu0: f64,
    rss: Option<RssSampler>,
}

/// What [`ResourceProbe::finish`] measured.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct ResourceUse {
    /// Broker CPU seconds used during the run (`None` without `--broker-pid`).
    pub(crate) broker_cpu_s: Option<f64>,
    /// CPU seconds the bench itself used during the run.
    pub(crate) bench_cpu_s: f64,
    /// Largest broker `VmRSS` sampled during the run, in bytes.
    pub(crate) broker_peak_rss: Option<u64>,
    /// The broker's `VmHWM` at the end (peak over its whole life), in bytes.
    pub(crate) broker_vm_hwm: Option<u64>,
}

impl ResourceProbe {
    /// Starts measuring now.
    pub(crate) fn start(broker_pid: Option<u32>) -> Self {
        let broker = broker_pid.map(Proc::Pid);
        ResourceProbe {
            broker,
            broker_cpu0: broker.and_then(Proc::cpu_seconds),
            self_cpu0: Proc::SelfProc.cpu_seconds().unwrap_or(0.0),
            rss: broker.map(RssSampler::start),
        }
    }

    /// Broker CPU seconds used since the start (for live progress).
    pub(crate) fn broker_cpu_now(&self) -> Option<f64> {
        Some(self.broker?.cpu_seconds()? - self.broker_cpu0?)
    }

    /// Stops measuring and returns the totals.
    pub(crate) fn finish(self) -> ResourceUse {
        let broker_cpu_s = self.broker_cpu_now();
        ResourceUse {
            broker_cpu_s,
            bench_cpu_s: Proc::SelfProc.cpu_seconds().unwrap_or(0.0) - self.self_cpu0,
            broker_peak_rss: self.rss.map(RssSampler::stop),
            broker_vm_hwm: self.broker.and_then(|p| p.status_bytes("VmHWM:")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_rss() {
        // Burn a little CPU so the counter is past its start.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(Proc::SelfProc.cpu_seconds().is_some());
        let rss = Proc::SelfProc.status_bytes("VmRSS:").unwrap_or(0);
        assert!(rss > 100 * 1024, "rss {rss}");
        assert!(Proc::Pid(u32::MAX).cpu_seconds().is_none());
    }
}
