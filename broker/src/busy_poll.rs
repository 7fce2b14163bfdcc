//! Busy polling: for a short window after a client's bytes arrive, one thread keeps a CPU
//! awake, so that the threads the next message wakes do not wait for a halted CPU.
//!
//! # Why
//! On a request/reply path every hop through the broker starts with a worker thread waking from
//! `epoll_wait`. On an idle machine, and above all on a virtual one, that wake-up costs more
//! than everything the broker does with the message: with 1 caller and 1 call in flight the
//! broker process spent ~40 µs of CPU per round trip, nearly all of it in the kernel, for two
//! `epoll_wait`/`recvfrom`/`sendto` rounds (`perf stat`, 2026-11-26). The Erlang VM offers the
//! same trade as this module (`+sbwt`, schedulers busy-wait before they sleep); RabbitMQ's
//! start script turns it off (`-sbwt none`).
//!
//! # How
//! Every read of a client socket calls [`BusyPoll::touch`]: one clock read and one atomic store.
//! The poller thread (`lepus-busy-poll`) then keeps its CPU busy until the last touch is a
//! window old, calling `sched_yield` in a loop so that any runnable thread on that CPU (a
//! runtime worker, a client on the same machine) goes first. The broker's own threads do not
//! change; what changes is that a thread woken by the next message finds a CPU that is awake.
//! This is the guest halt-polling of KVM's `haltpoll` cpuidle driver, done by the process that
//! knows when traffic flows (the machine the benchmarks ran on has the driver with polling
//! turned off, `haltpoll.guest_halt_poll_ns=0`, and a nested hypervisor, where a halted
//! CPU is slow to wake). Two alternatives measured worse (1 caller, 1 call in flight, the bench's
//! own client): polling the sockets from a runtime task, ~55 µs against ~34 µs per round trip
//! (and more CPU: every yield of such a task makes tokio wake an idle worker to look for work);
//! a poller at `SCHED_IDLE` priority, ~90 µs (the scheduler then counts its CPU as idle and
//! places woken threads on it).
//! Once the window has passed without a touch, the thread parks and costs nothing until the
//! next touch unparks it.
//!
//! # Costs
//! While traffic flows with gaps shorter than the window, up to one CPU core; none when idle.
//! The window is `--busy-poll-us` (the `lepus-broker` binary's default is 100 µs; zero disables
//! it, and an embedded broker, which runs on its host's runtime, has it off unless
//! [`crate::BrokerBuilder::busy_poll`] sets it). Figures are in the README's performance section.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// `last_touch` before the first touch.
const NEVER: u64 = u64::MAX;

/// How long the parked poller sleeps before it checks whether the broker is gone.
const PARK_CHECK: Duration = Duration::from_secs(1);

/// The busy-poll window and the poller thread's state, shared by the connection tasks (which
/// [`touch`](Self::touch) it) and the poller thread.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    /// The origin of the nanosecond timestamps in `last_touch`.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the latest [`Self::touch`] ([`NEVER`] before the first).
    last_touch: AtomicU64,
    /// True while the poller is parked (or about to park).
    parked: AtomicBool,
    /// The poller thread, to unpark it (set once it is started).
    thread: OnceLock<Thread>,
    /// How long the poller keeps polling after a touch, in nanoseconds.
    window: u64,
}

impl BusyPoll {
    /// A poller state with `window`; `None` when the window is zero (busy polling off).
    pub(crate) fn new(window: Duration) -> Option<Arc<Self>> {
        if window.is_zero() {
            return None;
        }
        Some(Arc::new(Self {
            epoch: Instant::now(),
            last_touch: AtomicU64::new(NEVER),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
            // Saturates for windows beyond 584 years.
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        }))
    }

    /// Nanoseconds since `epoch` (saturating: the broker does not run for 584 years).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the window since the last touch has passed.
    fn expired(&self) -> bool {
        let last = self.last_touch.load(Ordering::SeqCst);
        last == NEVER || self.now().saturating_sub(last) > self.window
    }

    /// Records client activity: the poller polls for another window from now.
    pub(crate) fn touch(&self) {
        let now = self.now();
        let last = self.last_touch.load(Ordering::Relaxed);
        // Under load every read of every connection lands here: while the last touch is fresh
        // (a quarter of the window) and the poller runs, skip the store, which would make the
        // cores take turns owning this cache line. The poller then polls for at least three
        // quarters of the window after the latest read, and it cannot park meanwhile (a fresh
        // touch is not expired).
        if last != NEVER
            && now.saturating_sub(last) < self.window / 4
            && !self.parked.load(Ordering::Relaxed)
        {
            return;
        }
        // SeqCst on both sides (this store then the `parked` load; the poller's `parked` store
        // then its `last_touch` load): at least one side sees the other's store, so a touch
        // never leaves the poller parked through a busy period.
        self.last_touch.store(now, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                // A token if the poller has not parked yet; a futex wake only if it has.
                thread.unpark();
            }
        }
    }

    /// Whether the poller is parked (for tests).
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Starts the poller thread. It ends when the broker stops or is dropped.
    pub(crate) fn start(self: &Arc<Self>, shutdown: Shutdown) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("lepus-busy-poll".to_owned())
            .spawn(move || poll(weak, shutdown))?;
        // `start` is called once per broker, right after `new`.
        let _ = self.thread.set(thread.thread().clone());
        Ok(())
    }
}

/// The poller thread: keeps its CPU busy while touched within the window, parks otherwise.
fn poll(weak: Weak<BusyPoll>, shutdown: Shutdown) {
    loop {
        let Some(bp) = weak.upgrade() else { return };
        // One upgrade per busy period, not per turn: the reference count shares a cache line
        // with `last_touch`, which every connection's reads touch.
        bp.parked.store(false, Ordering::SeqCst);
        while !bp.expired() {
            if shutdown.is_stopping() {
                return;
            }
            // Lets any runnable thread on this CPU (a connection task's worker, a client on the
            // same machine) go first; with none, returns at once and the CPU stays awake.
            std::thread::yield_now();
        }
        bp.parked.store(true, Ordering::SeqCst);
        if bp.expired() {
            drop(bp);
            if shutdown.is_stopping() {
                return;
            }
            // Unparked by the next touch (or a token it left since the store above).
            std::thread::park_timeout(PARK_CHECK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_window_turns_busy_polling_off() {
        assert!(BusyPoll::new(Duration::ZERO).is_none());
        assert!(BusyPoll::new(Duration::from_micros(1)).is_some());
    }

    /// The poller polls after a touch, parks once the window has passed without one, wakes on
    /// the next touch, and ends with the broker.
    #[tokio::test]
    async fn spins_after_a_touch_parks_when_idle_and_stops_with_the_broker() {
        let bp = BusyPoll::new(Duration::from_millis(300)).expect("window is not zero");
        let (stop, shutdown) = Shutdown::new();
        bp.start(shutdown).expect("start the poller");
        let thread = bp.thread.get().expect("started").clone();

        // Never touched: parks at once.
        wait_until(|| bp.is_parked()).await;
        bp.touch();
        wait_until(|| !bp.is_parked()).await;
        // Still within the window shortly after the touch (5 ms of a 300 ms window)...
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!bp.is_parked(), "parked within the window");
        // ...and parked once it has passed.
        wait_until(|| bp.is_parked()).await;
        assert!(bp.expired());

        // Stops while spinning.
        bp.touch();
        wait_until(|| !bp.is_parked()).await;
        stop.send(true).expect("the poller holds a receiver");
        drop(thread);
        // The thread holds only a weak reference: once it has ended, ours is the only one.
        wait_until(|| Arc::weak_count(&bp) == 0).await;
    }

    /// Polls `cond`  for up to 5 s.
    async fn wait_until(cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "condition not reached in 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
