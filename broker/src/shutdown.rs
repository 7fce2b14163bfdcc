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
use tracing::{debug, error, info, warn};

use crate::sockets::SocketBudget;

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
/// own, then drains those tasks. Each connection holds a place in `sockets` for its life; a
/// socket accepted when the budget is spent is closed at once. The connection tasks live in a
/// `JoinSet` this loop owns, so they stop with it; finished ones are reaped as they end.
pub(crate) async fn accept_connections<F, Fut>(
    listener: TcpListener,
    mut shutdown: Shutdown,
    kind: &'static str,
    sockets: SocketBudget,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Option<SocketAddr>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut log = AcceptLog::new(kind);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    log.accepted();
                    let Some(place) = sockets.try_take() else {
                        log.refused(sockets.limit());
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, listener = kind, "accepted");
                    let local = stream.local_addr().ok();
                    let connection = serve(stream, peer, local);
                    connections.spawn(async move {
                        connection.await;
                        drop(place);
                    });
                }
                Err(err) => {
                    log.failed(&err);
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

/// How often a listener that keeps failing to accept, or keeps closing sockets over the
/// budget, says so again (and the store, of removes that keep failing).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One kind of event logged at most every [`LOG_EVERY`]: the first of a run at once, then a
/// line a period with how many happened meanwhile. Used by the listeners (failed accepts,
/// sockets over the budget) and by the store (failed removes, refused write batches).
#[derive(Debug, Default)]
pub(crate) struct Throttled {
    /// Events since the run began.
    total: u64,
    /// Events not yet reported in a log line.
    unlogged: u64,
    /// When the last line was logged.
    logged_at: Option<Instant>,
}

impl Throttled {
    /// Counts one event; `Some(events since the last line)` when a line is due.
    pub(crate) fn hit(&mut self) -> Option<u64> {
        self.total += 1;
        self.unlogged += 1;
        if self.logged_at.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return None;
        }
        self.logged_at = Some(Instant::now());
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Ends the run: `Some(events in it)` when there was one, and the next event is logged at
    /// once.
    pub(crate) fn end_run(&mut self) -> Option<u64> {
        (self.total > 0).then(|| std::mem::take(self).total)
    }

    /// (events since the run began, events not yet reported in a log line).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.total, self.unlogged)
    }
}

/// What a listener logs about the sockets it could not serve, without flooding: failed accepts
/// (out of file descriptors, a listener retrying every [`ACCEPT_RETRY`] would otherwise write
/// 20 lines a second for as long as it lasts) and sockets closed over the socket budget. Each
/// is logged at its first, then at most once every [`LOG_EVERY`] with a count; after failed
/// accepts, one line says when accepting works again.
#[derive(Debug)]
pub(crate) struct AcceptLog {
    /// The listener's name in logs (`amqp`, `tls`, `management`).
    listener: &'static str,
    /// Failed accepts since accepting last worked.
    failed: Throttled,
    /// Sockets closed because the budget was spent.
    refused: Throttled,
}

impl AcceptLog {
    /// Nothing logged yet.
    pub(crate) fn new(listener: &'static str) -> Self {
        Self {
            listener,
            failed: Throttled::default(),
            refused: Throttled::default(),
        }
    }

    /// Counts a failed accept, logging it when a line is due. Returns whether it logged.
    pub(crate) fn failed(&mut self, err: &std::io::Error) -> bool {
        let Some(failed) = self.failed.hit() else {
            return false;
        };
        error!(
            cause = %err,
            listener = self.listener,
            failed,
            "accept failed; retrying every 50 ms, logging every 10 s while it fails"
        );
        true
    }

    /// Counts a socket closed at once because `budget` sockets are open, logging it when a
    /// line is due. Returns whether it logged.
    pub(crate) fn refused(&mut self, budget: usize) -> bool {
        let Some(refused) = self.refused.hit() else {
            return false;
        };
        warn!(
            listener = self.listener,
            refused,
            budget,
            "socket budget spent: connection closed at once (see --socket-limit); \
             logging every 10 s while it lasts"
        );
        true
    }

    /// Notes a successful accept: after failures, says that accepting works again.
    pub(crate) fn accepted(&mut self) {
        if let Some(failed) = self.failed.end_run() {
            info!(
                listener = self.listener,
                failed, "accepting connections again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failed_accepts_logs_its_first_and_then_one_line_per_period() {
        let mut log = AcceptLog::new("amqp");
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(log.failed(&emfile), "the first failure is logged");
        let logged = (0..1_000).filter(|_| log.failed(&emfile)).count();
        assert_eq!(logged, 0, "failures within the period are only counted");
        assert_eq!(log.failed.unlogged, 1_000);
        // A period later the next failure is logged with the count.
        log.failed.logged_at = Some(Instant::now() - LOG_EVERY);
        assert!(log.failed(&emfile));
        assert_eq!(log.failed.unlogged, 0);
        // Accepting again ends the run: the next failure is logged at once.
        log.accepted();
        assert_eq!(log.failed.total, 0);
        assert!(log.failed(&emfile));
        // Refusals are counted apart, and a success does not reset them.
        assert!(log.refused(8));
        log.accepted();
        assert!(!log.refused(8));
        assert_eq!(log.refused.total, 2);
    }
}
