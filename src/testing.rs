//! Test helpers for Lepus users, one idiom for every kind of handler.
//!
//! With a broker, [`TestBed`]: serve a handler (RPC, task or event) on an in-process broker,
//! call, enqueue or publish, and wait for the handler to finish (what nameko's
//! `entrypoint_waiter` does):
//! ```
//! use std::time::Duration;
//! use lepus::testing::{Outcome, TestBed};
//!
//! #[lepus::task(queue = "emails")]
//! async fn send_email(to: String) -> Result<(), std::io::Error> {
//!     // ...
//! #   let _ = to;
//!     Ok(())
//! }
//!
//! #[lepus::rpc(queue = "math")]
//! async fn fib(n: u32) -> u64 {
//!     (0..n).fold((0, 1), |(a, b), _| (b, a + b)).0
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut bed = TestBed::start().await?; // a bundled broker on 127.0.0.1:0
//! let mut done = bed.serve(send_email::handler()).await?; // a worker, observed, consuming
//! send_email::enqueue(bed.client(), "a@example.com".into()).await?;
//! let completion = done.next_within(Duration::from_secs(30)).await?;
//! assert_eq!(completion.outcome, Outcome::Succeeded);
//!
//! let mut done = bed.serve(fib::handler()).await?; // an RPC handler: the same
//! assert_eq!(fib::call(bed.client(), 10).await?, 55);
//! let completion = done.next_within(Duration::from_secs(30)).await?;
//! assert_eq!(completion.outcome, Outcome::Succeeded);
//! bed.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Without a broker (unit tests, nameko's `worker_factory`): [`call_local`],
//! [`run_task_local`] and [`deliver_local`] run one handler in this process exactly as a worker
//! would (arguments and results through MessagePack, `Err` and panics reported the same way,
//! a task's retry decision), with the delivery state the handler sees (`task::current()`,
//! `event::current()`) given by the test:
//! ```
//! use lepus::testing::{call_local, run_task_local, Outcome, TaskInfo};
//!
//! #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
//! enum MathError {
//!     #[error("fib({0}) does not fit in a u64")]
//!     Overflow(u32),
//! }
//!
//! #[lepus::rpc(queue = "math")]
//! async fn fib(n: u32) -> Result<u64, MathError> {
//!     if n > 93 {
//!         return Err(MathError::Overflow(n));
//!     }
//!     Ok((0..n).fold((0, 1), |(a, b), _| (b, a + b)).0)
//! }
//!
//! #[lepus::task(queue = "emails", retries = 3)]
//! async fn send_email(to: String) -> Result<(), std::io::Error> {
//!     Err(std::io::Error::other(format!("{to}: mailbox full")))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let overflow = call_local::<fib>((100,)).await;
//! assert!(matches!(overflow, Err(lepus::Error::Remote(MathError::Overflow(100)))));
//! // The fourth attempt of a task with 3 retries is its last: its failure dead-letters it.
//! let fourth_try = TaskInfo { attempt: 4, ..TaskInfo::default() };
//! let outcome = run_task_local::<send_email>(("a@example.com".into(),), fourth_try).await;
//! assert!(matches!(outcome, Outcome::DeadLettered { .. }));
//! # }
//! ```

use std::time::Duration;

pub use lepus_runtime::event::{run_local as deliver_local, EventInfo};
pub use lepus_runtime::task::{
    observe, observe_all, run_local as run_task_local, Completion, Completions, Outcome, TaskInfo,
};
pub use lepus_runtime::{call_local, call_local_with, Context};

#[cfg(feature = "broker")]
use crate::broker::{Broker, BrokerHandle};
use lepus_runtime::{Client, Connection, Error, IntoHandlers, Result, Worker, WorkerHandle};

/// How long [`TestBed::serve`] and [`TestBed::worker`] wait for a new worker to consume.
const READY_WAIT: Duration = Duration::from_secs(10);

/// A broker (in-process, or external), a connection, a client, and the workers started on it.
pub struct TestBed {
    /// The in-process broker; `None` for an external one (never stopped by us).
    #[cfg(feature = "broker")]
    broker: Option<BrokerHandle>,
    url: String,
    prefix: String,
    conn: Connection,
    client: Client,
    /// Each worker and its own connection; `stop` shuts each one down.
    workers: Vec<(WorkerHandle, Connection)>,
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
    /// Starts a bundled broker on `127.0.0.1:0` and connects to it (the `broker` feature).
    #[cfg(feature = "broker")]
    pub async fn start() -> Result<TestBed> {
        let broker = Broker::builder()
            .listen("127.0.0.1:0")
            .start()
            .await
            .map_err(|e| Error::Config(format!("cannot start the bundled broker: {e}")))?;
        let url = broker.amqp_url();
        let mut bed = TestBed::on(url, String::new()).await?;
        bed.broker = Some(broker);
        Ok(bed)
    }

    /// Uses the broker at `url`, naming every queue and exchange with `prefix` (so tests
    /// sharing a broker do not meet).
    pub async fn external(url: &str, prefix: &str) -> Result<TestBed> {
        TestBed::on(url.to_owned(), prefix.to_owned()).await
    }

    async fn on(url: String, prefix: String) -> Result<TestBed> {
        let conn = lepus_runtime::connect(&url).await?;
        let client = Client::builder(&conn)
            .queue_prefix(prefix.clone())
            .build()
            .await
            .map_err(Error::widen)?;
        Ok(TestBed {
            #[cfg(feature = "broker")]
            broker: None,
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

    /// The prefix of every queue and exchange name of this bed (empty on the bundled broker).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bed's connection (shared by its client).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A client to enqueue, publish and call with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Serves a handler (RPC, task or event), or every method of a service
    /// (`AccountsServer::new(fake)`), on a worker of its own (own connection, prefetch of one)
    /// and returns its completions once the worker consumes (its queues, exchanges and bindings
    /// declared: calls, enqueued tasks and published events reach it from then on). A handler
    /// taking `State<T>` gets it from `handler.state(fake)`, or serve it with
    /// [`TestBed::worker`] and `Worker::state`.
    pub async fn serve(&mut self, handlers: impl IntoHandlers) -> Result<Completions> {
        let (handlers, mut completions) = observe_all(handlers);
        self.worker(|worker| worker.prefetch(1).serve(handlers))
            .await?;
        completions.declared(READY_WAIT).await?;
        Ok(completions)
    }

    /// Starts a worker configured by `configure` on a connection of its own, and returns once
    /// it consumes.
    pub async fn worker(&mut self, configure: impl FnOnce(Worker) -> Worker) -> Result<()> {
        let conn = lepus_runtime::connect(&self.url).await?;
        let mut worker = configure(Worker::new(&conn).queue_prefix(self.prefix.clone())).spawn();
        let ready = worker.ready(READY_WAIT).await;
        self.workers.push((worker, conn));
        ready
    }

    /// Stops every worker gracefully, closes the connection and stops the in-process broker.
    pub async fn stop(self) {
        for (worker, conn) in self.workers {
            let _ = worker.shutdown().await;
            conn.close().await;
        }
        self.conn.close().await;
        #[cfg(feature = "broker")]
        if let Some(broker) = self.broker {
            broker.shutdown().await;
        }
    }
}
