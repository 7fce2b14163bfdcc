//! Test helpers for Lepus users: run handlers against an in-process broker and wait for them to
//! finish (what nameko's `entrypoint_waiter` does).
//!
//! ```ignore
//! let mut bed = lepus::testing::TestBed::start().await?;           // bundled broker, 127.0.0.1:0
//! let mut done = bed.serve(send_email::handler()).await?;          // a worker, observed
//! send_email::enqueue(bed.client(), "a@example.com".into()).await?;
//! let completion = done.next_within(Duration::from_secs(5)).await?;
//! assert_eq!(completion.outcome, lepus::task::Outcome::Succeeded);
//! bed.stop().await;
//! ```

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use lepus_runtime::task::{observe, Completion, Completions, Outcome};

use crate::broker::{Broker, BrokerHandle};
use lepus_runtime::{Client, Connection, Error, Handler, Result, Worker};

/// How long [`TestBed::serve`] waits for a new worker's declarations.
const DECLARE_WAIT: Duration = Duration::from_secs(10);

/// A broker (in-process, or external), a connection, a client, and the workers started on it.
pub struct TestBed {
    /// The in-process broker; `None` for an external one (never stopped by us).
    broker: Option<BrokerHandle>,
    url: String,
    prefix: String,
    conn: Connection,
    client: Client,
    /// Each worker's stop signal and task; `stop` signals and awaits each one.
    workers: Vec<(oneshot::Sender<()>, JoinHandle<Result<()>>, Connection)>,
}

impl std::fmt::Debug for TestBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBed")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl TestBed {
    /// Starts a bundled broker on `127.0.0.1:0` and connects to it.
    pub async fn start() -> Result<TestBed> {
        let broker = Broker::builder()
            .listen("127.0.0.1:0")
            .start()
            .await
            .map_err(|e| Error::Config(format!("cannot start the bundled broker: {e}")))?;
        let url = broker.amqp_url();
        TestBed::on(Some(broker), url, String::new()).await
    }

    /// Uses the broker at `url`, naming every queue and exchange with `prefix` (so tests
    /// sharing a broker do not meet).
    pub async fn external(url: &str, prefix: &str) -> Result<TestBed> {
        TestBed::on(None, url.to_owned(), prefix.to_owned()).await
    }

    async fn on(broker: Option<BrokerHandle>, url: String, prefix: String) -> Result<TestBed> {
        let conn = lepus_runtime::connect(&url).await?;
        let client = Client::builder(&conn)
            .queue_prefix(prefix.clone())
            .build()
            .await
            .map_err(Error::widen)?;
        Ok(TestBed {
            broker,
            url,
            prefix,
            conn,
            client,
            workers: Vec::new(),
        })
    }

    /// The broker's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bed's connection (shared by its client).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A client to enqueue, publish and call with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Serves a task or event handler on a worker of its own (own connection, prefetch 1) and
    /// returns its completions once the worker has declared the handler's queue and bindings
    /// (so that events published from then on reach it).
    pub async fn serve(&mut self, handler: Handler) -> Result<Completions> {
        let (handler, mut completions) = observe(handler)?;
        self.worker(|worker| worker.prefetch(1).serve(handler))
            .await?;
        completions.declared(DECLARE_WAIT).await?;
        Ok(completions)
    }

    /// Starts a worker configured by `configure` on a connection of its own.
    pub async fn worker(&mut self, configure: impl FnOnce(Worker) -> Worker) -> Result<()> {
        let conn = lepus_runtime::connect(&self.url).await?;
        let worker = configure(Worker::new(&conn).queue_prefix(self.prefix.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        self.workers.push((stop, task, conn));
        Ok(())
    }

    /// Stops every worker gracefully, closes the connection and stops the in-process broker.
    pub async fn stop(self) {
        for (stop, task, conn) in self.workers {
            let _ = stop.send(());
            let _ = task.await;
            conn.close().await;
        }
        self.conn.close().await;
        if let Some(broker) = self.broker {
            broker.shutdown().await;
        }
    }
}
