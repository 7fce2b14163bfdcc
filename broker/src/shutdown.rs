//! The broker-wide stop signal: one `watch` channel whose sender the [`crate::BrokerHandle`]
//! owns; the listener and every connection task hold a [`Shutdown`] receiver. And how a
//! listener accepts until the signal and then waits for its connection tasks
//! ([`accept_connections`], [`drain_connections`]), logging failed accepts without flooding
//! the log ([`AcceptErrors`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info};

/// A listener for the broker's stop signal. Cloned into every task that must stop with it.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    /// The other end is `BrokerHandle::stop_tx`; it sends `true` once, or is dropped (which also
    /// counts as "stop").
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new signal: the sender (to keep in the handle) and its first listener.
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self { rx })
    }

    /// Whether the broker is stopping, without waiting.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the broker is stopping (at once if it already is).
    pub(crate) async fn recv(&mut self) {
        // `wait_for` errs only when the sender is gone, which also means "stop".
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// The accept loop of a listener (`kind` names it in logs: `amqp`, `tls`): accepts until the
/// stop signal, runs `serve(stream, peer, local address)` for each connection as a task of its
/// own, then drains those tasks. The connection tasks live in a `JoinSet` this loop owns, so
/// they stop with it; finished ones are reaped as they end.
pub(crate) async fn accept_connections<F, Fut>(
    listener: TcpListener,
    mut shutdown: Shutdown,
    kind: &'static str,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Option<SocketAddr>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::new(kind);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    errors.accepted();
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, listener = kind, "accepted");
                    let local = stream.local_addr().ok();
                    connections.spawn(serve(stream, peer, local));
                }
                Err(err) => {
                    errors.failed(&err);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
    drop(listener);
    drain_connections(connections).await;
}

/// After a listener stops: every connection got the stop signal too; give them 5 s to close
/// politely, then abort the rest.
pub(crate) async fn drain_connections(mut connections: JoinSet<()>) {
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// How long a listener waits after a failed accept before it tries again. Accept fails mostly
/// when the process is out of file descriptors (EMFILE, ENFILE): retrying at once would spin
/// until some connection ends.
pub(crate) const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How often a listener that keeps failing to accept says so again.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The failed accepts of one listener, logged without flooding: the first failure of a run at
/// once, then one line every [`ACCEPT_ERROR_LOG_EVERY`] with how many failed meanwhile, and one
/// line when accepting works again. (Out of file descriptors, a listener retrying every
/// [`ACCEPT_RETRY`] would otherwise write 20 lines a second for as long as it lasts.)
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    /// The listener's name in logs (`amqp`, `tls`, `management`).
    listener: &'static str,
    /// Failures since accepting last worked.
    failures: u64,
    /// Failures not yet reported in a log line.
    unlogged: u64,
    /// When the last line was logged.
    logged_at: Option<Instant>,
}

impl AcceptErrors {
    /// No failures yet.
    pub(crate) fn new(listener: &'static str) -> Self {
        Self {
            listener,
            failures: 0,
            unlogged: 0,
            logged_at: None,
        }
    }

    /// Counts a failed accept, logging it if the last line is old enough. Returns whether it
    /// logged (for tests).
    pub(crate) fn failed(&mut self, err: &std::io::Error) -> bool {
        self.failures += 1;
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY);
        if due {
            error!(
                cause = %err,
                listener = self.listener,
                failed = self.unlogged,
                "accept failed; retrying every 50 ms, logging every 10 s while it fails"
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
        due
    }

    /// Notes a successful accept: after failures, says that accepting works again.
    pub(crate) fn accepted(&mut self) {
        if self.failures > 0 {
            info!(
                listener = self.listener,
                failed = self.failures,
                "accepting connections again"
            );
            *self = Self::new(self.listener);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failed_accepts_logs_its_first_and_then_one_line_per_period() {
        let mut errors = AcceptErrors::new("amqp");
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(errors.failed(&emfile), "the first failure is logged");
        let logged = (0..1_000).filter(|_| errors.failed(&emfile)).count();
        assert_eq!(logged, 0, "failures within the period are only counted");
        assert_eq!(errors.unlogged, 1_000);
        // A period later the next failure is logged with the count.
        errors.logged_at = Some(Instant::now() - ACCEPT_ERROR_LOG_EVERY);
        assert!(errors.failed(&emfile));
        assert_eq!(errors.unlogged, 0);
        // Accepting again resets the run: the next failure is logged at once.
        errors.accepted();
        assert_eq!(errors.failures, 0);
        assert!(errors.failed(&emfile));
    }
}
