//! The broker-wide stop signal: one `watch` channel whose sender the [`crate::BrokerHandle`]
//! owns; the listener and every connection task hold a [`Shutdown`] receiver. And how a
//! listener accepts until the signal and then waits for its connection tasks
//! ([`accept_connections`], [`drain_connections`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error};

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
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, listener = kind, "accepted");
                    let local = stream.local_addr().ok();
                    connections.spawn(serve(stream, peer, local));
                }
                Err(err) => {
                    error!(cause = %err, listener = kind, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
