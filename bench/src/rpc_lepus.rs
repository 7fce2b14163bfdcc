//! `rpc --impl lepus`: the same echo service written the Lepus way — an `#[lepus::rpc]`
//! function served by a `lepus::Worker` and called through its generated stub — so the bench
//! can put the framework's calls/s next to the hand-written lapin pair of [`crate::rpc_lapin`]
//! (issue 3 "Done means" 4: at least 90% of it).
//!
//! `rpc --impl lepus-service` runs the same echo as a `#[lepus::service]` trait, its generated
//! client and server: the same queue, method name and wire, so the two idioms are measured on
//! equal terms (issue 16 "Done means" 6: the trait costs nothing).
//!
//! Each run uses its own queue prefix (`lepus-bench-<hex>-`), so the worker's queue is
//! `<prefix>echo`; the worker declares it, the scenario deletes it at the end.

use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{BenchError, Result};
use crate::rpc::RpcCaller;

/// The service under test: returns its argument.
#[lepus::rpc(queue = "echo")]
async fn echo(body: Bytes) -> Bytes {
    body
}

/// The same service as a contract trait (one method, named like the function).
#[lepus::service(queue = "echo")]
trait EchoService {
    /// Returns its argument.
    async fn echo(&self, body: Bytes) -> Bytes;
}

/// The trait's implementation (no state).
struct EchoImpl;

impl EchoService for EchoImpl {
    async fn echo(&self, body: Bytes) -> Bytes {
        body
    }
}

/// Which of the two idioms serves and calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stub {
    /// `#[lepus::rpc]`: `echo::handler()` and `echo::call`.
    Function,
    /// `#[lepus::service]`: `EchoServiceServer` and `EchoServiceClient`.
    Service,
}

/// Opaque bytes as one MessagePack `bin` (what `serde_bytes` does): serde's default for a
/// `Vec<u8>` is a sequence, one MessagePack integer per byte, which a Rust service sending
/// bytes would not choose. The hand-written lapin pair sends the same bytes unencoded.
#[derive(Debug, Default, lepus::Plain)]
struct Bytes(Vec<u8>);

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Accepts `bin` (borrowed or owned).
struct BytesVisitor;

impl serde::de::Visitor<'_> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<Bytes, E> {
        Ok(Bytes(v))
    }
}

/// The queue the worker serves under `prefix`.
pub(crate) fn queue_name(prefix: &str) -> String {
    format!("{prefix}echo")
}

/// A `lepus::Worker` serving `echo` in a task of the bench.
pub(crate) struct LepusServer {
    /// The worker's own connection; closed after the worker stopped.
    conn: lepus::Connection,
    /// Dropping or sending on it starts the worker's graceful shutdown.
    stop: oneshot::Sender<()>,
    /// The worker's `run_until`; ends after the graceful shutdown.
    task: JoinHandle<lepus::Result<()>>,
}

impl std::fmt::Debug for LepusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LepusServer").finish_non_exhaustive()
    }
}

impl LepusServer {
    /// Connects and starts serving `<prefix>echo` with `prefetch` and `concurrency`.
    pub(crate) async fn start(
        url: &str,
        prefix: &str,
        prefetch: u16,
        concurrency: usize,
        stub: Stub,
    ) -> Result<Self> {
        let conn = lepus::connect(url).await?;
        let worker = lepus::Worker::new(&conn)
            .queue_prefix(prefix)
            .prefetch(prefetch)
            .concurrency(concurrency);
        let worker = match stub {
            Stub::Function => worker.serve(echo::handler()),
            Stub::Service => worker.serve(EchoServiceServer::new(EchoImpl)),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(LepusServer { conn, stop, task })
    }

    /// Graceful shutdown, then closes the connection.
    pub(crate) async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        let res = self.task.await?;
        self.conn.close().await;
        Ok(res?)
    }
}

/// A caller: one Lepus connection and client, many calls in flight through its stub.
pub(crate) struct LepusCaller {
    conn: lepus::Connection,
    client: lepus::Client,
    /// The trait's client (on `client`) when measuring the service idiom.
    service: Option<EchoServiceClient>,
}

impl std::fmt::Debug for LepusCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LepusCaller").finish_non_exhaustive()
    }
}

impl LepusCaller {
    /// Connects a client whose calls go to queues under `prefix`, and waits (up to 30 s) until
    /// the worker answers.
    pub(crate) async fn connect(url: &str, prefix: &str, stub: Stub) -> Result<Self> {
        let conn = lepus::connect(url).await?;
        let client = lepus::Client::builder(&conn)
            .queue_prefix(prefix)
            .build()
            .await?;
        let started = std::time::Instant::now();
        loop {
            match echo::call(&client, Bytes::default()).await {
                Ok(_) => break,
                // The worker may still be declaring its queue.
                Err(lepus::Error::NoRoute { .. }) if started.elapsed().as_secs() < 30 => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let service = (stub == Stub::Service).then(|| EchoServiceClient::new(&client));
        Ok(LepusCaller {
            conn,
            client,
            service,
        })
    }
}

impl RpcCaller for LepusCaller {
    fn call(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(async move {
            let reply = match &self.service {
                Some(service) => service.echo(Bytes(body)).await,
                None => echo::call(&self.client, Bytes(body)).await,
            };
            reply.map(|reply| reply.0).map_err(BenchError::from)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.conn.close())
    }
}
