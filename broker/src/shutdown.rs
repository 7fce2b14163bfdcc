//! The broker-wide stop signal: one `watch` channel whose sender the [`crate::BrokerHandle`]
//! owns; the listener and every connection task hold a [`Shutdown`] receiver. And how a
//! listener waits for its connection tasks once the signal is out ([`drain_connections`]).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

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

/// After a listener stops: every connection got the stop signal too; give them 5 s to close
/// politely, then abort the rest. Shared by the TCP and the TLS accept loops.
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
