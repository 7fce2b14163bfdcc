//! Worker and client metrics in the Prometheus text format (the `metrics` feature; without it
//! every recording function here is an empty inline function).
//!
//! The families, served from the `prometheus` crate's default registry (so an application's own
//! metrics registered there are served beside them):
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
//! default buckets (5 ms to 10 s). A series appears once it has counted something.
//!
//! Recording is per thread: each thread that records owns a shard (its own lock, never
//! contended but by a scrape, and plain integers under it), so the runtime's threads never
//! pass the cache lines of shared counters back and forth on every call; a scrape adds the
//! shards up (a shard of a thread that ended is folded into a retired total first). Every
//! recording completed before a scrape starts is in it. Recording allocates only the first
//! time a thread sees a label set.

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
    count(queue, handler, HandlerCounter::Retries);
}

/// Counts a message sent to its dead-letter queue (a task) or rejected (an event).
#[inline]
pub(crate) fn dead_lettered(queue: &str, handler: &str) {
    count(queue, handler, HandlerCounter::DeadLetters);
}

/// Counts a delivery the broker had delivered before.
#[inline]
pub(crate) fn redelivered(queue: &str, handler: &str) {
    count(queue, handler, HandlerCounter::Redeliveries);
}

/// Which of a handler's plain counters [`count`] adds to.
#[derive(Clone, Copy)]
// Without the feature nothing reads the counters.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
enum HandlerCounter {
    /// Runs in progress, up or down by the number.
    InFlight(i64),
    Retries,
    DeadLetters,
    Redeliveries,
}

/// Adds to one plain counter of `handler` on `queue` (nothing without the `metrics` feature).
#[inline]
fn count(queue: &str, handler: &str, counter: HandlerCounter) {
    #[cfg(feature = "metrics")]
    enabled::count(queue, handler, counter);
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, handler, counter);
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
pub(crate) struct InFlight<'a> {
    #[cfg(feature = "metrics")]
    series: (&'a str, &'a str),
    #[cfg(not(feature = "metrics"))]
    series: std::marker::PhantomData<&'a str>,
}

impl<'a> InFlight<'a> {
    /// A run of `handler` on `queue` starts.
    #[inline]
    pub(crate) fn start(queue: &'a str, handler: &'a str) -> InFlight<'a> {
        count(queue, handler, HandlerCounter::InFlight(1));
        InFlight {
            #[cfg(feature = "metrics")]
            series: (queue, handler),
            #[cfg(not(feature = "metrics"))]
            series: std::marker::PhantomData,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        count(self.series.0, self.series.1, HandlerCounter::InFlight(-1));
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::cell::OnceCell;
    use std::collections::HashMap;

    use fnv::{FnvBuildHasher, FnvHashMap};
    use std::io;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
    use std::time::Duration;

    use prometheus::core::{Collector, Desc};
    use prometheus::proto::{self, MetricFamily, MetricType};
    use prometheus::TextEncoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;
    use tracing::debug;

    use super::HandlerCounter;
    use crate::observe::Outcome;

    /// Upper bounds of the duration histograms' buckets (Prometheus' defaults), seconds.
    const BUCKETS: [f64; 11] = *prometheus::DEFAULT_BUCKETS;

    /// One duration histogram: per-bucket (not cumulative) counts, the last one `+Inf`.
    #[derive(Clone, Default)]
    struct Histogram {
        buckets: [u64; BUCKETS.len() + 1],
        sum: f64,
    }

    impl Histogram {
        fn observe(&mut self, seconds: f64) {
            let bucket = BUCKETS.partition_point(|&bound| bound < seconds);
            self.buckets[bucket] += 1;
            self.sum += seconds;
        }

        fn count(&self) -> u64 {
            self.buckets.iter().sum()
        }

        fn add(&mut self, other: &Histogram) {
            for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
                *mine += theirs;
            }
            self.sum += other.sum;
        }
    }

    /// What one thread counted for one `(queue, handler)`.
    #[derive(Clone, Default)]
    struct HandlerSeries {
        requests: [u64; Outcome::ALL.len()],
        duration: Histogram,
        /// Runs started minus runs ended on this thread (a run may end on another thread, so
        /// one shard's figure can be negative; the sum is not).
        in_flight: i64,
        retries: u64,
        dead_letters: u64,
        redeliveries: u64,
    }

    impl HandlerSeries {
        fn add(&mut self, other: &HandlerSeries) {
            add_counts(&mut self.requests, &other.requests);
            self.duration.add(&other.duration);
            self.in_flight += other.in_flight;
            self.retries += other.retries;
            self.dead_letters += other.dead_letters;
            self.redeliveries += other.redeliveries;
        }
    }

    /// What one thread counted for one `(queue, method)` a client called.
    #[derive(Clone, Default)]
    struct ClientSeries {
        calls: [u64; Outcome::ALL.len()],
        duration: Histogram,
    }

    impl ClientSeries {
        fn add(&mut self, other: &ClientSeries) {
            add_counts(&mut self.calls, &other.calls);
            self.duration.add(&other.duration);
        }
    }

    fn add_counts(mine: &mut [u64], theirs: &[u64]) {
        for (mine, theirs) in mine.iter_mut().zip(theirs) {
            *mine += theirs;
        }
    }

    /// Series by queue, then by handler or method name (two levels so that a lookup borrows
    /// the two `&str`s instead of building a key).
    type ByName<T> = HashMap<String, FnvHashMap<String, T>, FnvBuildHasher>;

    /// Runs `update` on the series of `(queue, name)`, made on first use. A hit hashes each
    /// name once and allocates nothing.
    fn with_series<T: Default>(
        map: &mut ByName<T>,
        queue: &str,
        name: &str,
        update: impl FnOnce(&mut T),
    ) {
        if let Some(series) = map.get_mut(queue).and_then(|names| names.get_mut(name)) {
            update(series);
            return;
        }
        update(
            map.entry(queue.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_default(),
        );
    }

    fn merge<T: Default>(into: &mut ByName<T>, from: &ByName<T>, add: fn(&mut T, &T)) {
        for (queue, names) in from {
            for (name, counted) in names {
                with_series(into, queue, name, |series| add(series, counted));
            }
        }
    }

    /// Everything one thread (or, for the retired total, every ended thread) counted.
    #[derive(Clone, Default)]
    struct Counts {
        handlers: ByName<HandlerSeries>,
        clients: ByName<ClientSeries>,
    }

    impl Counts {
        fn add(&mut self, other: &Counts) {
            merge(&mut self.handlers, &other.handlers, HandlerSeries::add);
            merge(&mut self.clients, &other.clients, ClientSeries::add);
        }
    }

    /// One thread's shard: locked by its thread on every recording and by a scrape.
    #[derive(Default)]
    struct Shard(Mutex<Counts>);

    impl Shard {
        fn lock(&self) -> MutexGuard<'_, Counts> {
            // A panic while holding the lock leaves plain counters, still valid.
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// The live threads' shards and what ended threads counted.
    #[derive(Default)]
    struct Shards {
        live: Vec<Arc<Shard>>,
        retired: Counts,
    }

    fn shards() -> MutexGuard<'static, Shards> {
        static SHARDS: OnceLock<Mutex<Shards>> = OnceLock::new();
        SHARDS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This thread's shard, registered on first use and retired when the thread ends.
    struct ThreadShard(Arc<Shard>);

    impl Drop for ThreadShard {
        fn drop(&mut self) {
            let mut shards = shards();
            shards.live.retain(|live| !Arc::ptr_eq(live, &self.0));
            let counts = std::mem::take(&mut *self.0.lock());
            shards.retired.add(&counts);
        }
    }

    thread_local! {
        static SHARD: OnceCell<ThreadShard> = const { OnceCell::new() };
    }

    /// Runs `record` on this thread's counts. A recording made while the thread is being torn
    /// down (from another thread-local's destructor) is dropped.
    fn record(record: impl FnOnce(&mut Counts)) {
        registered();
        let _ = SHARD.try_with(|cell| {
            let shard = cell.get_or_init(|| {
                let shard = Arc::new(Shard::default());
                shards().live.push(Arc::clone(&shard));
                ThreadShard(shard)
            });
            record(&mut shard.0.lock());
        });
    }

    pub(super) fn handled(queue: &str, handler: &str, outcome: Outcome, elapsed: Duration) {
        record(|counts| {
            with_series(&mut counts.handlers, queue, handler, |series| {
                series.requests[outcome.index()] += 1;
                series.duration.observe(elapsed.as_secs_f64());
            });
        });
    }

    pub(super) fn called(queue: &str, method: &str, outcome: Outcome, elapsed: Duration) {
        record(|counts| {
            with_series(&mut counts.clients, queue, method, |series| {
                series.calls[outcome.index()] += 1;
                series.duration.observe(elapsed.as_secs_f64());
            });
        });
    }

    pub(super) fn count(queue: &str, handler: &str, counter: HandlerCounter) {
        record(|counts| {
            with_series(
                &mut counts.handlers,
                queue,
                handler,
                |series| match counter {
                    HandlerCounter::InFlight(by) => series.in_flight += by,
                    HandlerCounter::Retries => series.retries += 1,
                    HandlerCounter::DeadLetters => series.dead_letters += 1,
                    HandlerCounter::Redeliveries => series.redeliveries += 1,
                },
            );
        });
    }

    /// The families' names, help texts and labels (the table in the module documentation).
    const FAMILIES: [(&str, &str, MetricType, &[&str]); 8] = [
        (
            "lepus_handler_requests_total",
            "Requests, task attempts and events a worker's handlers ran, by outcome.",
            MetricType::COUNTER,
            &["queue", "handler", "outcome"],
        ),
        (
            "lepus_handler_duration_seconds",
            "Wall time of a handler run, seconds.",
            MetricType::HISTOGRAM,
            &["queue", "handler"],
        ),
        (
            "lepus_handler_in_flight",
            "Handler runs in progress on this worker.",
            MetricType::GAUGE,
            &["queue", "handler"],
        ),
        (
            "lepus_handler_retries_total",
            "Failed task attempts sent to retry.",
            MetricType::COUNTER,
            &["queue", "handler"],
        ),
        (
            "lepus_handler_dead_letters_total",
            "Tasks sent to their dead-letter queue and events rejected.",
            MetricType::COUNTER,
            &["queue", "handler"],
        ),
        (
            "lepus_handler_redeliveries_total",
            "Deliveries the broker had delivered before (redelivered = true).",
            MetricType::COUNTER,
            &["queue", "handler"],
        ),
        (
            "lepus_client_calls_total",
            "Calls a client made, by outcome.",
            MetricType::COUNTER,
            &["queue", "method", "outcome"],
        ),
        (
            "lepus_client_call_duration_seconds",
            "Wall time of a call as its caller saw it, seconds.",
            MetricType::HISTOGRAM,
            &["queue", "method"],
        ),
    ];

    /// The collector the default registry asks at each scrape: it adds the shards up.
    struct LepusCollector {
        descs: Vec<Desc>,
    }

    /// Registers the collector in the default registry, once.
    fn registered() {
        static REGISTERED: OnceLock<()> = OnceLock::new();
        REGISTERED.get_or_init(|| {
            let descs = FAMILIES
                .iter()
                .map(|(name, help, _, labels)| {
                    let labels = labels.iter().map(|l| (*l).to_owned()).collect();
                    Desc::new(
                        (*name).to_owned(),
                        (*help).to_owned(),
                        labels,
                        HashMap::new(),
                    )
                    .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"))
                })
                .collect();
            // A registration error means the application registered one of these names
            // itself; Lepus still counts, only the registry does not serve it twice.
            let _ = prometheus::register(Box::new(LepusCollector { descs }));
        });
    }

    impl Collector for LepusCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.descs.iter().collect()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let total = {
                let shards = shards();
                let mut total = shards.retired.clone();
                for shard in &shards.live {
                    total.add(&shard.lock());
                }
                total
            };
            let mut families: Vec<MetricFamily> = FAMILIES
                .iter()
                .map(|(name, help, kind, _)| {
                    let mut family = MetricFamily::default();
                    family.set_name((*name).to_owned());
                    family.set_help((*help).to_owned());
                    family.set_field_type(*kind);
                    family
                })
                .collect();
            for (queue, names) in &total.handlers {
                for (name, s) in names {
                    let labels = [("handler", name.as_str()), ("queue", queue.as_str())];
                    outcomes(&mut families[0], &labels, &s.requests);
                    histogram(&mut families[1], &labels, &s.duration);
                    // A gauge from the first run on; the counters from their first count.
                    let ran = s.requests.iter().sum::<u64>() > 0 || s.in_flight != 0;
                    for (family, value, shown) in [
                        (2, s.in_flight as f64, ran),
                        (3, s.retries as f64, s.retries > 0),
                        (4, s.dead_letters as f64, s.dead_letters > 0),
                        (5, s.redeliveries as f64, s.redeliveries > 0),
                    ] {
                        if shown {
                            plain(&mut families[family], &labels, value);
                        }
                    }
                }
            }
            for (queue, names) in &total.clients {
                for (name, s) in names {
                    let labels = [("method", name.as_str()), ("queue", queue.as_str())];
                    outcomes(&mut families[6], &labels, &s.calls);
                    histogram(&mut families[7], &labels, &s.duration);
                }
            }
            families
        }
    }

    fn label_pairs(labels: &[(&str, &str)]) -> Vec<proto::LabelPair> {
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect()
    }

    /// One counter sample per outcome counted, with the `outcome` label in name order.
    fn outcomes(family: &mut MetricFamily, labels: &[(&str, &str); 2], counts: &[u64]) {
        for (outcome, &count) in Outcome::ALL.iter().zip(counts) {
            if count > 0 {
                let [first, queue] = *labels;
                let pairs = label_pairs(&[first, ("outcome", outcome.as_str()), queue]);
                let mut metric = proto::Metric::from_label(pairs);
                let mut counter = proto::Counter::default();
                counter.set_value(count as f64);
                metric.set_counter(counter);
                family.mut_metric().push(metric);
            }
        }
    }

    /// One counter or gauge sample, by the family's type.
    fn plain(family: &mut MetricFamily, labels: &[(&str, &str)], value: f64) {
        let mut metric = proto::Metric::from_label(label_pairs(labels));
        if family.get_field_type() == MetricType::GAUGE {
            let mut gauge = proto::Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        } else {
            let mut counter = proto::Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        }
        family.mut_metric().push(metric);
    }

    /// One histogram sample with cumulative buckets, once it has an observation.
    fn histogram(family: &mut MetricFamily, labels: &[(&str, &str)], counted: &Histogram) {
        if counted.count() == 0 {
            return;
        }
        let mut cumulative = 0;
        let buckets = BUCKETS
            .iter()
            .zip(counted.buckets)
            .map(|(&bound, count)| {
                cumulative += count;
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut histogram = proto::Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(counted.count());
        histogram.set_sample_sum(counted.sum);
        let mut metric = proto::Metric::from_label(label_pairs(labels));
        metric.set_histogram(histogram);
        family.mut_metric().push(metric);
    }

    /// Every metric of the default registry (Lepus' and the application's), in the Prometheus
    /// text format (version 0.0.4).
    pub fn render() -> String {
        registered();
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
        registered();
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

#[cfg(all(test, feature = "metrics"))]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use super::*;

    /// The value of the sample line that starts with `series` (name and labels, as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn a_scrape_adds_up_every_thread_including_ended_ones() {
        // A run that starts on one thread and ends on another, and counts from a thread that
        // has ended by the time of the scrape (its shard folded into the retired total).
        let (queue, handler) = ("metrics-unit-q", "h");
        let run = InFlight::start(queue, handler);
        std::thread::spawn(move || {
            drop(run);
            handled(queue, handler, Outcome::Ok, Duration::from_millis(3));
            handled(queue, handler, Outcome::Panic, Duration::from_secs(20));
            retried(queue, handler);
        })
        .join()
        .unwrap();
        let still_running = InFlight::start(queue, handler);
        handled(queue, handler, Outcome::Ok, Duration::from_millis(30));
        called(queue, "m", Outcome::Timeout, Duration::from_secs(1));

        let text = render();
        let of = |family: &str, labels: &str| sample(&text, &format!("{family}{{{labels}}}"));
        let q = format!("queue=\"{queue}\"");
        let h = format!("handler=\"{handler}\"");
        assert_eq!(
            of(
                "lepus_handler_requests_total",
                &format!("{h},outcome=\"ok\",{q}")
            ),
            Some(2.0)
        );
        assert_eq!(
            of(
                "lepus_handler_requests_total",
                &format!("{h},outcome=\"panic\",{q}")
            ),
            Some(1.0)
        );
        assert_eq!(
            of(
                "lepus_handler_requests_total",
                &format!("{h},outcome=\"timeout\",{q}")
            ),
            None
        );
        assert_eq!(
            of("lepus_handler_in_flight", &format!("{h},{q}")),
            Some(1.0)
        );
        assert_eq!(
            of("lepus_handler_retries_total", &format!("{h},{q}")),
            Some(1.0)
        );
        assert_eq!(
            of("lepus_handler_dead_letters_total", &format!("{h},{q}")),
            None
        );
        // Buckets are cumulative: 3 ms in le=0.005, 30 ms by le=0.05, 20 s only in +Inf.
        let bucket = |le: &str| {
            of(
                "lepus_handler_duration_seconds_bucket",
                &format!("{h},{q},le=\"{le}\""),
            )
        };
        assert_eq!(bucket("0.005"), Some(1.0));
        assert_eq!(bucket("0.025"), Some(1.0));
        assert_eq!(bucket("0.05"), Some(2.0));
        assert_eq!(bucket("10"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            of("lepus_handler_duration_seconds_count", &format!("{h},{q}")),
            Some(3.0)
        );
        let sum = of("lepus_handler_duration_seconds_sum", &format!("{h},{q}")).unwrap();
        assert!((sum - 20.033).abs() < 1e-9, "{sum}");
        let m = format!("method=\"m\",{q}");
        assert_eq!(
            of(
                "lepus_client_calls_total",
                &format!("method=\"m\",outcome=\"timeout\",{q}")
            ),
            Some(1.0)
        );
        assert_eq!(
            of("lepus_client_call_duration_seconds_count", &m),
            Some(1.0)
        );
        assert_eq!(
            of(
                "lepus_client_call_duration_seconds_bucket",
                &format!("{m},le=\"1\"")
            ),
            Some(1.0)
        );

        drop(still_running);
        let text = render();
        assert_eq!(
            sample(&text, &format!("lepus_handler_in_flight{{{h},{q}}}")),
            Some(0.0)
        );
    }
}
