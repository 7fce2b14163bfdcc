//! [`Registry`]: what one worker knows about itself for the control plane: its id, what it
//! serves, the deliveries it runs now (with a way to cancel those that opted in), its counts
//! by outcome, the revocations it holds, and the shutdown a control command asked for.
//!
//! The worker's delivery tasks register each run ([`Registry::start`], unregistered when the
//! returned [`Running`] is dropped); the control listener (`listener`) reads it to answer
//! `inspect` and writes revocations into it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use crate::control::message::{HandlerInfo, Revocation, RunningTask, WorkerInfo};
use crate::task::headers::now_ms;

/// The most revocations a worker holds; past it the one expiring first is forgotten (the
/// durable queue `lepus.revoked` is bounded the same way).
pub(crate) const MAX_REVOKED: usize = 100_000;

/// Counts the workers of this process (for their ids).
static WORKERS: AtomicU32 = AtomicU32::new(0);

/// One worker's control-plane state; shared (`Arc`) by the worker loop, its delivery tasks and
/// its control listener.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) id: String,
    host: String,
    pid: u32,
    started: Instant,
    pub(crate) handlers: Vec<HandlerInfo>,
    pub(crate) prefetch: u16,
    pub(crate) concurrency: usize,
    /// Numbers the runs, as keys of `running`.
    next_run: AtomicU64,
    running: Mutex<HashMap<u64, Run>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Task id -> expiry (Unix ms).
    revoked: Mutex<HashMap<String, i64>>,
    /// Set to `true` by a `shutdown` command; the worker's loop watches it (the receiver).
    shutdown: watch::Sender<bool>,
}

/// A run in the registry.
#[derive(Debug)]
struct Run {
    info: RunningTask,
    /// Completing it cancels the run (set for cancellable runs; the receiver is the delivery
    /// task's, which drops the handler's future when it fires).
    cancel: Option<oneshot::Sender<()>>,
}

/// A registered run; unregisters it when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    registry: Arc<Registry>,
    key: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.registry.running).remove(&self.key);
    }
}

/// What a revocation found on this worker.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) running: bool,
    pub(crate) cancelled: bool,
}

/// Locks a mutex, taking it over if a panicking holder poisoned it (every update here leaves
/// the data consistent between statements).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub(crate) fn new(handlers: Vec<HandlerInfo>, prefetch: u16, concurrency: usize) -> Self {
        let host = host_name();
        let pid = std::process::id();
        let n = WORKERS.fetch_add(1, Ordering::Relaxed) + 1;
        Registry {
            id: format!("{host}:{pid}:{n}"),
            host,
            pid,
            started: Instant::now(),
            handlers,
            prefetch,
            concurrency,
            next_run: AtomicU64::new(0),
            running: Mutex::default(),
            counts: Mutex::default(),
            revoked: Mutex::default(),
            shutdown: watch::channel(false).0,
        }
    }

    /// Registers a run; a cancellable one also gets the receiver that fires on its revocation.
    pub(crate) fn start(
        self: &Arc<Self>,
        info: RunningTask,
    ) -> (Running, Option<oneshot::Receiver<()>>) {
        let key = self.next_run.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = if info.cancellable {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        lock(&self.running).insert(key, Run { info, cancel });
        (
            Running {
                registry: self.clone(),
                key,
            },
            cancelled,
        )
    }

    /// Counts one settled delivery.
    pub(crate) fn count(&self, outcome: &'static str) {
        *lock(&self.counts).entry(outcome).or_default() += 1;
    }

    /// True when task `id` is revoked (and the revocation has not expired).
    pub(crate) fn is_revoked(&self, id: &str) -> bool {
        let revoked = lock(&self.revoked);
        revoked.get(id).is_some_and(|&until| until > now_ms())
    }

    /// Holds a revocation (an expired one is ignored) and cancels the task where it runs here
    /// and opted in.
    pub(crate) fn revoke(&self, revocation: &Revocation) -> Found {
        let now = now_ms();
        if revocation.expires_at_ms <= now {
            return Found::default();
        }
        {
            let mut revoked = lock(&self.revoked);
            if revoked.len() >= MAX_REVOKED && !revoked.contains_key(&revocation.task_id) {
                revoked.retain(|_, until| *until > now);
                if revoked.len() >= MAX_REVOKED {
                    // Forget the one that expires first.
                    if let Some(first) = revoked
                        .iter()
                        .min_by_key(|(_, until)| **until)
                        .map(|(id, _)| id.clone())
                    {
                        revoked.remove(&first);
                    }
                }
            }
            let until = revoked.entry(revocation.task_id.clone()).or_default();
            *until = (*until).max(revocation.expires_at_ms);
        }
        let mut found = Found::default();
        for run in lock(&self.running).values_mut() {
            if run.info.id.as_deref() == Some(revocation.task_id.as_str())
                && run.info.kind == "task"
            {
                found.running = true;
                if let Some(cancel) = run.cancel.take() {
                    found.cancelled |= cancel.send(()).is_ok();
                }
            }
        }
        found
    }

    /// Asks the worker to shut down gracefully.
    pub(crate) fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Completes once a `shutdown` command came.
    pub(crate) async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|asked| *asked).await;
    }

    /// The answer to `inspect`.
    pub(crate) fn info(&self) -> WorkerInfo {
        let mut running: Vec<RunningTask> = lock(&self.running)
            .values()
            .map(|run| run.info.clone())
            .collect();
        running.sort_by_key(|run| run.started_at_ms);
        let now = now_ms();
        let revoked = lock(&self.revoked)
            .values()
            .filter(|&&until| until > now)
            .count();
        WorkerInfo {
            worker: self.id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            handlers: self.handlers.clone(),
            prefetch: self.prefetch,
            concurrency: self.concurrency,
            running,
            counts: lock(&self.counts)
                .iter()
                .map(|(outcome, n)| ((*outcome).to_owned(), *n))
                .collect(),
            revoked,
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    fn run(id: &str, cancellable: bool) -> RunningTask {
        RunningTask {
            id: Some(id.into()),
            name: "t".into(),
            queue: "q".into(),
            kind: "task".into(),
            started_at_ms: now_ms(),
            cancellable,
        }
    }

    #[test]
    fn revocation_cancels_only_cancellable_runs_and_expires() {
        let registry = Arc::new(Registry::new(Vec::new(), 1, 1));
        let (_a, a_cancel) = registry.start(run("a", true));
        let (_b, b_cancel) = registry.start(run("b", false));
        assert!(b_cancel.is_none());
        let mut a_cancel = a_cancel.unwrap();
        let later = now_ms() + 60_000;
        let found = registry.revoke(&Revocation {
            task_id: "a".into(),
            expires_at_ms: later,
        });
        assert!(found.running && found.cancelled);
        assert!(a_cancel.try_recv().is_ok());
        let found = registry.revoke(&Revocation {
            task_id: "b".into(),
            expires_at_ms: later,
        });
        assert!(found.running && !found.cancelled);
        assert!(registry.is_revoked("a") && registry.is_revoked("b"));
        // Expired revocations are not held.
        registry.revoke(&Revocation {
            task_id: "c".into(),
            expires_at_ms: now_ms() - 1,
        });
        assert!(!registry.is_revoked("c"));
        assert_eq!(registry.info().running.len(), 2);
        drop(_a);
        assert_eq!(registry.info().running.len(), 1);
    }
}
