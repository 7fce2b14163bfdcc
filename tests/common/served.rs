//! The setup most framework tests start with: a broker, a worker pool in the background and a
//! client on a connection of its own, all under one unique queue prefix. Shared by the `rpc_*`
//! suites.

use lepus::{Client, Worker};

use super::background::BackgroundWorker;
use super::TestBroker;

/// A broker, the worker pool serving a test's handlers, and a client calling them.
pub struct Served {
    /// The test's broker (in-process, or the external one).
    pub broker: TestBroker,
    /// The unique queue prefix of the worker and the client.
    pub prefix: String,
    /// The worker pool: `configure(Worker::new(..).queue_prefix(prefix))`.
    pub worker: BackgroundWorker,
    /// A client on a connection of its own, calling queues under `prefix`.
    pub client: Client,
}

impl Served {
    /// Starts a broker, then a worker pool set up by `configure` and a client, under a prefix
    /// made of `stem` (see [`super::unique`]).
    pub async fn start(stem: &str, configure: impl FnOnce(Worker) -> Worker) -> Served {
        let broker = super::broker().await;
        let prefix = super::unique(stem);
        let worker = BackgroundWorker::start(broker.url(), &prefix, configure).await;
        let (_conn, client) = super::queued::client(broker.url(), &prefix).await;
        Served {
            broker,
            prefix,
            worker,
            client,
        }
    }

    /// The broker's AMQP URL.
    pub fn url(&self) -> &str {
        self.broker.url()
    }

    /// Shuts the worker down (checked: it must stop cleanly), then the broker.
    pub async fn stop(self) {
        self.worker.shutdown().await;
        self.broker.stop().await;
    }
}
