//! Fair shares of the runtime: how long one client's work may hold a lock, a task step or a
//! worker thread before others get their turn.
//!
//! Connection tasks handle frames synchronously (see `connection`), so a client whose frames
//! are expensive (a publish routed through thousands of bindings, a purge of millions of
//! messages) could otherwise keep a tokio worker, or the vhost's topology lock, from everyone
//! else. Three rules, in units of *work* (one binding, trie state, queue or message visited,
//! roughly 10 to 50 ns each):
//!
//! - A connection task yields to the runtime once it has done [`WORK_PER_TURN`] since it last
//!   did (every frame counts at least one), even with frames left in its read buffer.
//! - Routing holds the topology lock for at most about [`LOCKED_WORK`] at a time: a larger
//!   binding set is matched on a snapshot after the lock is released (`VHost::route`).
//! - One operation estimated at more than [`HEAVY_WORK`] (a route through a huge binding set,
//!   an enqueue to thousands of queues) runs in [`heavy`]: on a multi-threaded runtime the
//!   worker's other tasks move to another thread while it runs (`block_in_place`), so no
//!   other client waits for it. On a current-thread runtime (tests, embedded use) there is no
//!   other thread; there the per-turn yield is what lets other clients in.

/// Work after which a connection task yields (about one read buffer of plain publishes).
pub(crate) const WORK_PER_TURN: usize = 4096;

/// Work a route may do under the topology read lock before it works on a snapshot instead.
pub(crate) const LOCKED_WORK: usize = 4096;

/// Work of one operation past which it runs in [`heavy`] (about a millisecond or more).
pub(crate) const HEAVY_WORK: usize = 64 * 1024;

/// Runs `work`, a synchronous operation of more than [`HEAVY_WORK`], without holding up the
/// other tasks of this worker: on a multi-threaded runtime through
/// `tokio::task::block_in_place` (the worker hands its queue to another thread first); else
/// (current-thread runtime, or no runtime) directly.
pub(crate) fn heavy<R>(work: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|h| {
        matches!(
            h.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        )
    });
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
