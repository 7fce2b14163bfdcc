//! The socket budget: how many client sockets the broker's listeners (AMQP, TLS, management)
//! hold at once, so that clients can never take the file descriptors the store needs.
//!
//! Every accepted socket is a file descriptor, and so is every segment file the store opens.
//! Without a budget, enough sockets (unauthenticated ones included: a socket holds its
//! descriptor until the handshake timeout) leave the store unable to open its next segment,
//! which fails every persistent write from then on. RabbitMQ keeps the same reserve: it logs
//! "Limiting to approx 924 file handles (829 sockets)" for a limit of 1024 and stops
//! accepting at the sockets figure. Lepus accepts the socket over the budget and closes it at
//! once (the client sees the connection end instead of waiting in the kernel's backlog), and
//! logs that at most every 10 s.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept out of the socket budget: 100 (RabbitMQ's reserve for files) plus a tenth
/// of the limit, but never more than half of it.
pub(crate) fn derived_socket_limit(fd_limit: u64) -> usize {
    let reserve = (100 + fd_limit / 10).min(fd_limit / 2);
    usize::try_from(fd_limit - reserve)
        .unwrap_or(Semaphore::MAX_PERMITS)
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// The process's soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when it is
/// unlimited or the platform has none.
#[cfg(unix)]
pub(crate) fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The process's soft limit on open file descriptors: none known off Unix.
#[cfg(not(unix))]
pub(crate) fn fd_limit() -> Option<u64> {
    None
}

/// Raises the soft limit on open file descriptors to the hard limit (as Go's runtime does at
/// start), returning the limits before and after; `None` when nothing changed. An unlimited
/// hard limit is left alone (Linux and macOS refuse an unlimited soft one). For the
/// `lepus-broker` binary only: an embedded broker leaves its host process's limits alone.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<Option<(u64, u64)>> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if hard > soft => {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                },
            )?;
            Ok(Some((soft, hard)))
        }
        _ => Ok(None),
    }
}

/// Raising the descriptor limit: nothing to do off Unix.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<Option<(u64, u64)>> {
    Ok(None)
}

/// The sockets the listeners may hold at once, shared by all of them.
#[derive(Debug, Clone)]
pub(crate) struct SocketBudget {
    /// One permit a socket, held by its connection task.
    permits: Arc<Semaphore>,
    /// The budget's size.
    limit: usize,
}

impl SocketBudget {
    /// A budget of `configured` sockets, or (`None`) one derived from the process's descriptor
    /// limit by [`derived_socket_limit`] (unbounded when the limit is).
    pub(crate) fn new(configured: Option<usize>) -> Self {
        let limit = configured
            .or_else(|| fd_limit().map(derived_socket_limit))
            .unwrap_or(Semaphore::MAX_PERMITS)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// How many sockets the listeners may hold at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// How many they hold now.
    pub(crate) fn in_use(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// A place for one more socket, held until dropped; `None` when the budget is spent.
    pub(crate) fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_limit_keeps_descriptors_for_the_store() {
        // RabbitMQ's figure for 1024 is 829 sockets; ours keeps a little more back.
        assert_eq!(derived_socket_limit(1024), 822);
        assert_eq!(derived_socket_limit(65_536), 65_536 - 100 - 6_553);
        // Small limits keep half.
        assert_eq!(derived_socket_limit(64), 32);
        assert_eq!(derived_socket_limit(2), 1);
        assert_eq!(derived_socket_limit(0), 1);
    }

    #[test]
    fn a_spent_budget_refuses_until_a_socket_is_released() {
        let budget = SocketBudget::new(Some(2));
        let a = budget.try_take().expect("first");
        let _b = budget.try_take().expect("second");
        assert_eq!(budget.in_use(), 2);
        assert!(budget.try_take().is_none(), "over the budget");
        drop(a);
        assert!(
            budget.try_take().is_some(),
            "a released place is taken again"
        );
    }
}
