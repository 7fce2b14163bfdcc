//! Worker and client metrics in the Prometheus text format (the `metrics` feature; without it
//! every recording function here is an empty inline function).
//!
//! The families, registered once in the `prometheus` crate's default registry (so an
//! application's own metrics registered there are served beside them):
//! | family                                | type      | labels                      |
//! |---------------------------------------|-----------|-----------------------------|
//! | `lepus_handler_requests_total`        | counter   | `queue`, `handler`, `outcome` |
//! | `lepus_handler_duration_seconds`      | histogram | `queue`, `handler`          |
//! | `lepus_handler_in_flight`             | gauge     | `queue`, `handler`          |
//! | `lepus_handler_retries_total`         | counter   | `queue`, `handler`          |
//! | `lepus_handler_dead_letters_total`    | counter   | `queue`, `handler`          |
//! | `lepus_handler_redeliveries_total`    | counter   | `queue`, `handler`          |
//! | `lepus_client_calls_total`            | counter   | `queue`, `method`, `outcome` |
//! | `lepus_client_call_duration_seconds`  | histogram | `queue`, `method`           |
//!
//! `handler` is the method, task or event handler name the worker was given, never a name a
//! message carries (a request for an unknown method is not counted per handler): the label
//! sets are bounded by the program, not by its input. `outcome` is an
//! [`Outcome`](crate::Outcome) label. Durations are wall time, in seconds, with Prometheus'
//! default buckets (5 ms to 10 s).
//!
//! Recording costs a few hash lookups under a read lock per message and allocates only the
//! first time a label set is seen.

use std::time::Duration;

use crate::observe::Outcome;

#[cfg(feature = "metrics")]
pub use enabled::{render, serve, MetricsServer};

/// Counts one handler run that ended with `outcome` after `elapsed`.
#[inline]
pub(crate) fn handled(queue: &str, handler: &str, outcome: Outcome, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    enabled::handled(queue, handler, outcome, elapsed);
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, handler, outcome, elapsed);
}

/// Counts a task retry.
#[inline]
pub(crate) fn retried(queue: &str, handler: &str) {
    #[cfg(feature = "metrics")]
    enabled::family()
        .retries
        .with_label_values(&[queue, handler])
        .inc();
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, handler);
}

/// Counts a message sent to its dead-letter queue (a task) or rejected (an event).
#[inline]
pub(crate) fn dead_lettered(queue: &str, handler: &str) {
    #[cfg(feature = "metrics")]
    enabled::family()
        .dead_letters
        .with_label_values(&[queue, handler])
        .inc();
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, handler);
}

/// Counts a delivery the broker had delivered before.
#[inline]
pub(crate) fn redelivered(queue: &str, handler: &str) {
    #[cfg(feature = "metrics")]
    enabled::family()
        .redeliveries
        .with_label_values(&[queue, handler])
        .inc();
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, handler);
}

/// Counts one call a client made.
#[inline]
pub(crate) fn called(queue: &str, method: &str, outcome: Outcome, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    enabled::called(queue, method, outcome, elapsed);
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, method, outcome, elapsed);
}

/// One handler run in flight: the gauge goes up now and down when this is dropped.
pub(crate) struct InFlight {
    #[cfg(feature = "metrics")]
    gauge: prometheus::IntGauge,
}

impl InFlight {
    /// A run of `handler` on `queue` starts.
    #[inline]
    pub(crate) fn start(queue: &str, handler: &str) -> InFlight {
        #[cfg(feature = "metrics")]
        {
            let gauge = enabled::family()
                .in_flight
                .with_label_values(&[queue, handler]);
            gauge.inc();
            InFlight { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (queue, handler);
            InFlight {}
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.gauge.dec();
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use prometheus::{
        HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;
    use tracing::debug;

    use crate::observe::Outcome;

    /// The metric families (see the module documentation).
    pub(super) struct Family {
        requests: IntCounterVec,
        duration: HistogramVec,
        pub(super) in_flight: IntGaugeVec,
        pub(super) retries: IntCounterVec,
        pub(super) dead_letters: IntCounterVec,
        pub(super) redeliveries: IntCounterVec,
        calls: IntCounterVec,
        call_duration: HistogramVec,
    }

    /// The families, registered in the default registry on first use.
    pub(super) fn family() -> &'static Family {
        static FAMILY: OnceLock<Family> = OnceLock::new();
        FAMILY.get_or_init(|| Family::register(prometheus::default_registry()))
    }

    impl Family {
        fn register(registry: &Registry) -> Family {
            let handler = ["queue", "handler"];
            let counter = |name: &str, help: &str, labels: &[&str]| {
                let c = IntCounterVec::new(Opts::new(name, help), labels)
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                // A registration error means the application registered the same name itself;
                // the metric then still counts, only this registry does not serve it twice.
                let _ = registry.register(Box::new(c.clone()));
                c
            };
            let histogram = |name: &str, help: &str, labels: &[&str]| {
                let h = HistogramVec::new(HistogramOpts::new(name, help), labels)
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
                let _ = registry.register(Box::new(h.clone()));
                h
            };
            let in_flight = IntGaugeVec::new(
                Opts::new(
                    "lepus_handler_in_flight",
                    "Handler runs in progress on this worker.",
                ),
                &handler,
            )
            .unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
            let _ = registry.register(Box::new(in_flight.clone()));
            Family {
                requests: counter(
                    "lepus_handler_requests_total",
                    "Requests, task attempts and events a worker's handlers ran, by outcome.",
                    &["queue", "handler", "outcome"],
                ),
                duration: histogram(
                    "lepus_handler_duration_seconds",
                    "Wall time of a handler run, seconds.",
                    &handler,
                ),
                in_flight,
                retries: counter(
                    "lepus_handler_retries_total",
                    "Failed task attempts sent to retry.",
                    &handler,
                ),
                dead_letters: counter(
                    "lepus_handler_dead_letters_total",
                    "Tasks sent to their dead-letter queue and events rejected.",
                    &handler,
                ),
                redeliveries: counter(
                    "lepus_handler_redeliveries_total",
                    "Deliveries the broker had delivered before (redelivered = true).",
                    &handler,
                ),
                calls: counter(
                    "lepus_client_calls_total",
                    "Calls a client made, by outcome.",
                    &["queue", "method", "outcome"],
                ),
                call_duration: histogram(
                    "lepus_client_call_duration_seconds",
                    "Wall time of a call as its caller saw it, seconds.",
                    &["queue", "method"],
                ),
            }
        }
    }

    pub(super) fn handled(queue: &str, handler: &str, outcome: Outcome, elapsed: Duration) {
        let f = family();
        f.requests
            .with_label_values(&[queue, handler, outcome.as_str()])
            .inc();
        f.duration
            .with_label_values(&[queue, handler])
            .observe(elapsed.as_secs_f64());
    }

    pub(super) fn called(queue: &str, method: &str, outcome: Outcome, elapsed: Duration) {
        let f = family();
        f.calls
            .with_label_values(&[queue, method, outcome.as_str()])
            .inc();
        f.call_duration
            .with_label_values(&[queue, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Every metric of the default registry (Lepus' and the application's), in the Prometheus
    /// text format (version 0.0.4).
    pub fn render() -> String {
        family();
        let families = prometheus::gather();
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// The HTTP endpoint [`serve`] started: `GET /metrics` answers [`render`]. Stops when
    /// dropped.
    #[derive(Debug)]
    pub struct MetricsServer {
        addr: SocketAddr,
        /// The accept loop; aborted on drop (connections in progress end with it).
        task: JoinHandle<()>,
    }

    impl MetricsServer {
        /// The address it listens on (the port the system chose for port 0).
        pub fn local_addr(&self) -> SocketAddr {
            self.addr
        }
    }

    impl Drop for MetricsServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// At most this many scrapes are served at once; more wait in the listen backlog.
    const MAX_CONNECTIONS: usize = 16;
    /// A scrape must send its request within this time.
    const READ_TIMEOUT: Duration = Duration::from_secs(5);
    /// The longest request head read.
    const MAX_REQUEST: usize = 8 * 1024;

    /// Serves the metrics over HTTP/1.1 on `addr` (`GET /metrics`; anything else is 404),
    /// until the returned [`MetricsServer`] is dropped. A worker process calls it once, with
    /// the address its Prometheus scrapes (`"0.0.0.0:9464"`, say).
    pub async fn serve(addr: impl ToSocketAddrs) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        family();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(async move {
                            if let Err(cause) = answer(stream).await {
                                debug!(%cause, "metrics scrape failed");
                            }
                            drop(slot);
                        });
                    }
                    Err(cause) => {
                        debug!(%cause, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(MetricsServer { addr, task })
    }

    /// Reads one request head and answers it, then closes the connection.
    async fn answer(mut stream: TcpStream) -> io::Result<()> {
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 1024];
        let read = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            io::Result::Ok(())
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request head"))??;
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let (method, path) = (parts.next(), parts.next());
        let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
        let (status, body) = match (method, path) {
            (Some(b"GET"), Some(b"/metrics")) => ("200 OK", render()),
            _ => ("404 Not Found", "not found: GET /metrics\n".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}
