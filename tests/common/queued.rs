//! The setup the task-side suites (`task_queue`, `worker_poison`, `workflows`, ...) start with:
//! a broker and a client on a connection of its own under one unique queue prefix, with worker
//! pools started on demand (several tests start, kill or stop them one by one). The RPC suites'
//! counterpart, with one worker started up front, is [`super::served::Served`].

use lepus::task::{observe, Completions};
use lepus::{Client, Connection, Handler, Worker};

use super::background::BackgroundWorker;
use super::TestBroker;

/// A client on a connection of its own to `url`, calling queues under `prefix`.
pub async fn client(url: &str, prefix: &str) -> (Connection, Client) {
    let conn = lepus::connect(url).await.expect("client connects");
    let client = Client::builder(&conn)
        .queue_prefix(prefix)
        .build()
        .await
        .expect("client session starts");
    (conn, client)
}

/// A broker and a client under one unique prefix; workers come from [`Queued::worker`].
pub struct Queued {
    /// The test's broker (in-process, or the external one).
    pub broker: TestBroker,
    /// The unique queue prefix of the client and of every worker started here.
    pub prefix: String,
    /// The client's connection (also usable for queue status and dead letters).
    pub conn: Connection,
    /// A client calling and enqueueing under `prefix`.
    pub client: Client,
}

impl Queued {
    /// Starts a broker and a client under a prefix made of `stem` (see [`super::unique`]).
    pub async fn start(stem: &str) -> Queued {
        let broker = super::broker().await;
        let prefix = super::unique(stem);
        let (conn, client) = client(broker.url(), &prefix).await;
        Queued {
            broker,
            prefix,
            conn,
            client,
        }
    }

    /// The broker's AMQP URL.
    pub fn url(&self) -> &str {
        self.broker.url()
    }

    /// The full name of the queue (or exchange) `name` under the prefix.
    pub fn queue(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A worker pool on a connection of its own: `configure(Worker::new(..).queue_prefix(prefix))`.
    pub async fn worker(&self, configure: impl FnOnce(Worker) -> Worker) -> BackgroundWorker {
        BackgroundWorker::start(self.url(), &self.prefix, configure).await
    }

    /// A worker pool serving `handler` observed (after `configure`), and its completions.
    pub async fn observed(
        &self,
        handler: Handler,
        configure: impl FnOnce(Worker) -> Worker,
    ) -> (BackgroundWorker, Completions) {
        let (handler, done) = observe(handler);
        let worker = self.worker(|w| configure(w).serve(handler)).await;
        (worker, done)
    }

    /// Stops `workers` (unchecked, as [`BackgroundWorker::stop`]), then the broker.
    pub async fn stop(self, workers: impl IntoIterator<Item = BackgroundWorker>) {
        for worker in workers {
            worker.stop().await;
        }
        self.broker.stop().await;
    }
}
