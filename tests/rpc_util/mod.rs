//! Helpers shared by the `rpc_*` integration tests: a worker pool in the background (the shared
//! [`BackgroundWorker`]), a client, a cuttable proxy, all isolated by a unique queue prefix.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use lepus::{Client, Error};
use tokio::task::JoinHandle;

/// A client on its own connection, calling queues under `prefix`.
pub async fn client(url: &str, prefix: &str) -> Client {
    let conn = lepus::connect(url).await.expect("client connects");
    Client::builder(&conn)
        .queue_prefix(prefix)
        .build()
        .await
        .expect("client session starts")
}

/// Retries `f` until it returns `Some` (the first worker may still be declaring its queue).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `call` until the broker routes it (the worker may still be declaring its queue) and
/// returns that call's result; fails the test after 30 s of `NoRoute`.
pub async fn routed<T, E, Fut>(what: &str, mut call: impl FnMut() -> Fut) -> Result<T, Error<E>>
where
    Fut: std::future::Future<Output = Result<T, Error<E>>>,
{
    eventually(what, || {
        let answer = call();
        async move {
            match answer.await {
                Err(Error::NoRoute { .. }) => None,
                other => Some(other),
            }
        }
    })
    .await
}

/// A TCP proxy on 127.0.0.1 that can cut every connection through it at once, as a network
/// failure or a crashed broker would (the sockets just close, no AMQP goodbye).
pub struct CuttableProxy {
    addr: std::net::SocketAddr,
    /// Connections currently proxied; `cut` aborts them (dropping both sockets).
    links: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    /// While true, new connections are accepted and closed at once.
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: JoinHandle<()>,
}

impl CuttableProxy {
    /// Proxies to the host:port of `upstream_url`.
    pub async fn start(upstream_url: &str) -> CuttableProxy {
        let upstream = upstream_url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("url has host:port after '@'")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accept = tokio::spawn({
            let links = links.clone();
            let refusing = refusing.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if refusing.load(std::sync::atomic::Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        CuttableProxy {
            addr,
            links,
            refusing,
            accept,
        }
    }

    /// The proxied URL (same credentials and vhost, the proxy's address).
    pub fn url(&self, upstream_url: &str) -> String {
        let (head, rest) = upstream_url.split_once('@').unwrap();
        let vhost = rest.split_once('/').map(|(_, v)| v).unwrap_or("");
        format!("{head}@{}/{vhost}", self.addr)
    }

    /// Cuts every proxied connection and refuses new ones for `outage`.
    pub async fn cut_for(&self, outage: Duration) {
        self.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
        tokio::time::sleep(outage).await;
        self.refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}
