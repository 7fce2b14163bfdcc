//! Message rates over time, for the dashboard's charts and the `*_details` objects of the
//! management API (`{"rate": 12.5}`, with `"samples"` when asked), as RabbitMQ's stats
//! database keeps them.
//!
//! A sampler task reads the counters that already exist (each vhost's `VHostStats`, each
//! queue's counts, the connection and channel registries, the memory accounting and the
//! store's counters) every [`INTERVAL`] and appends them to bounded ring buffers: the last
//! [`VHOST_SAMPLES`] samples per vhost and broker-wide, the last [`QUEUE_SAMPLES`] per queue.
//! Nothing is added to the message path; a sample costs one short lock per queue, as a
//! `GET /api/queues` does.
//!
//! Memory: a vhost sample is ~250 bytes (121 of them: ~30 KiB per vhost); a queue sample 48
//! bytes (25 of them: ~1.2 KiB per queue plus its name; 2 of them per queue past
//! [`MANY_QUEUES`] queues).
//!
//! Concurrency: [`Rates::history`] is a `Mutex` taken by the sampler once per interval (after
//! it has read every figure, outside the lock) and by API requests to read a series.
//! Task ownership: [`run`] is spawned by `management::start` and awaited by the management
//! listener task; it ends on the broker's shutdown signal.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::metrics::VHostCounters;
use crate::queue::QueueFigures;
use crate::shutdown::Shutdown;

/// Time between two samples (RabbitMQ's `collect_statistics_interval` default).
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// Samples kept per vhost and broker-wide: ten minutes, and the one before.
pub(crate) const VHOST_SAMPLES: usize = 121;

/// Samples kept per queue: two minutes, and the one before.
pub(crate) const QUEUE_SAMPLES: usize = 25;

/// Past this many queues, each keeps only the two samples its current rates need, so the
/// history stays under ~10 MiB however many queues there are.
pub(crate) const MANY_QUEUES: usize = 10_000;

/// One vhost at one sample.
#[derive(Debug, Clone, Copy, Default)]
struct VHostSample {
    counters: VHostCounters,
    ready: u64,
    unacked: u64,
}

/// Broker-wide figures at one sample.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NodeSample {
    /// Accounted memory (queued messages), bytes.
    pub(crate) memory_used: u64,
    /// Connections opened and closed so far.
    pub(crate) connections: (u64, u64),
    /// Channels opened and closed so far.
    pub(crate) channels: (u64, u64),
    /// Store fsyncs so far.
    pub(crate) fsyncs: u64,
    /// Bytes the store wrote so far.
    pub(crate) store_bytes: u64,
}

/// One queue's samples; `id` tells a queue from a later one of the same name.
#[derive(Debug)]
struct QueueSeries {
    id: usize,
    samples: VecDeque<QueueFigures>,
}

/// The ring buffers. Every series is aligned with the tail of `ticks`: its last sample was
/// taken at the last tick (a series younger than the history is shorter).
#[derive(Debug, Default)]
struct History {
    /// Sample times, milliseconds since the Unix epoch, oldest first.
    ticks: VecDeque<u64>,
    vhosts: HashMap<String, VecDeque<VHostSample>>,
    node: VecDeque<NodeSample>,
    queues: HashMap<(String, String), QueueSeries>,
}

/// The rate history of one broker.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    /// See the module doc.
    history: Mutex<History>,
}

/// What a request asks for, RabbitMQ's query parameters: `msg_rates_age`/`msg_rates_incr`
/// for message counters, `lengths_age`/`lengths_incr` for queue lengths (seconds). Without
/// an age only the current rate is given.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct RateQuery {
    msg_rates_age: Option<u64>,
    msg_rates_incr: Option<u64>,
    lengths_age: Option<u64>,
    lengths_incr: Option<u64>,
}

/// Which samples one details object lists.
#[derive(Debug, Clone, Copy)]
struct Window {
    age_ms: u64,
    incr_ms: u64,
}

impl RateQuery {
    fn window(age: Option<u64>, incr: Option<u64>) -> Option<Window> {
        let age = age?.min(24 * 3600);
        Some(Window {
            age_ms: age * 1000,
            incr_ms: incr.unwrap_or(INTERVAL.as_secs()).max(1) * 1000,
        })
    }

    fn messages(&self) -> Option<Window> {
        Self::window(self.msg_rates_age, self.msg_rates_incr)
    }

    fn lengths(&self) -> Option<Window> {
        Self::window(self.lengths_age, self.lengths_incr)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `{"rate": r}`, plus `samples` (newest first), `avg` and `avg_rate` when `window` is given,
/// for a series of (time, value) pairs oldest first. A counter (`monotonic`) that went down
/// (its object was replaced) has rate 0 rather than a negative one.
fn details(series: &[(u64, u64)], window: Option<Window>, monotonic: bool) -> Value {
    let rate_between = |a: (u64, u64), b: (u64, u64)| -> f64 {
        let dt = b.0.saturating_sub(a.0) as f64 / 1000.0;
        if dt <= 0.0 {
            return 0.0;
        }
        let dv = b.1 as f64 - a.1 as f64;
        if monotonic && dv < 0.0 {
            0.0
        } else {
            dv / dt
        }
    };
    let rate = match series {
        [.., a, b] => rate_between(*a, *b),
        _ => 0.0,
    };
    let mut out = Map::new();
    out.insert("rate".into(), json!(round(rate)));
    if let Some(w) = window {
        let newest = series.last().map_or(0, |s| s.0);
        // Samples are taken every INTERVAL, give or take the sampler's scheduling delay (a
        // sample can land 4,990 ms after the one before): ages and increments are matched to
        // within half an interval, or a jittered pair would drop a sample.
        let slack = u64::try_from(INTERVAL.as_millis() / 2).unwrap_or(0);
        let mut picked: Vec<(u64, u64)> = Vec::new();
        for &s in series.iter().rev() {
            if newest.saturating_sub(s.0) > w.age_ms.saturating_add(slack) {
                break;
            }
            if picked
                .last()
                .is_none_or(|p| p.0.saturating_sub(s.0) >= w.incr_ms.saturating_sub(slack))
            {
                picked.push(s);
            }
        }
        let samples: Vec<Value> = picked
            .iter()
            .map(|(t, v)| json!({ "sample": v, "timestamp": t }))
            .collect();
        let avg = if picked.is_empty() {
            0.0
        } else {
            picked.iter().map(|s| s.1 as f64).sum::<f64>() / picked.len() as f64
        };
        let avg_rate = match (picked.first(), picked.last()) {
            (Some(&newest), Some(&oldest)) if picked.len() > 1 => rate_between(oldest, newest),
            _ => 0.0,
        };
        out.insert("samples".into(), Value::Array(samples));
        out.insert("avg".into(), json!(round(avg)));
        out.insert("avg_rate".into(), json!(round(avg_rate)));
    }
    Value::Object(out)
}

/// Rounds to 0.1, as RabbitMQ's rates are shown.
fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Appends `value` to a ring of at most `cap`.
fn push<T>(ring: &mut VecDeque<T>, value: T, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(value);
}

impl Rates {
    fn lock(&self) -> MutexGuard<'_, History> {
        // Poison-tolerant: every mutation is a push or a removal.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one sample of every vhost, queue and the node now.
    pub(crate) fn sample(&self, ctx: &Ctx) {
        let at = now_ms();
        let mut vhosts = Vec::new();
        let mut queues = Vec::new();
        for name in ctx.broker.access.vhosts() {
            let Some(vh) = ctx.broker.vhosts.get(&name) else {
                continue;
            };
            let mut sample = VHostSample {
                counters: vh.stats.counters(),
                ..VHostSample::default()
            };
            let list: Vec<_> = vh.read().queues.values().cloned().collect();
            for q in list {
                let f = q.figures();
                sample.ready += f.ready;
                sample.unacked += f.unacked;
                queues.push(((name.clone(), q.name.clone()), Arc::as_ptr(&q) as usize, f));
            }
            vhosts.push((name, sample));
        }
        let store = ctx.broker.vhosts.store.stats();
        let node = NodeSample {
            memory_used: ctx.broker.vhosts.memory.used(),
            connections: ctx.broker.connections.churn(),
            channels: ctx.broker.channels.churn(),
            fsyncs: store.as_ref().map_or(0, |s| s.fsyncs),
            store_bytes: store.as_ref().map_or(0, |s| s.bytes),
        };
        let mut h = self.lock();
        push(&mut h.ticks, at, VHOST_SAMPLES);
        push(&mut h.node, node, VHOST_SAMPLES);
        let live: std::collections::HashSet<String> =
            vhosts.iter().map(|(n, _)| n.clone()).collect();
        h.vhosts.retain(|n, _| live.contains(n));
        for (name, sample) in vhosts {
            push(h.vhosts.entry(name).or_default(), sample, VHOST_SAMPLES);
        }
        let live: std::collections::HashSet<(String, String)> =
            queues.iter().map(|(k, _, _)| k.clone()).collect();
        h.queues.retain(|k, _| live.contains(k));
        let cap = if queues.len() > MANY_QUEUES {
            2
        } else {
            QUEUE_SAMPLES
        };
        for (key, id, figures) in queues {
            let series = h.queues.entry(key).or_insert_with(|| QueueSeries {
                id,
                samples: VecDeque::new(),
            });
            if series.id != id {
                // A new queue under the name of a deleted one: its history starts over.
                series.id = id;
                series.samples.clear();
            }
            while series.samples.len() >= cap {
                series.samples.pop_front();
            }
            series.samples.push_back(figures);
        }
    }

    /// The tick times a series of `len` samples was taken at.
    fn times(h: &History, len: usize) -> impl Iterator<Item = u64> + '_ {
        h.ticks
            .iter()
            .skip(h.ticks.len().saturating_sub(len))
            .copied()
    }

    /// `message_stats` and the lengths' `*_details` summed over `vhosts`: the counters as
    /// they are now, the rates from the samples.
    pub(crate) fn vhosts_json(
        &self,
        vhosts: &[String],
        now: &VHostCounters,
        q: &RateQuery,
    ) -> (Value, Map<String, Value>) {
        let h = self.lock();
        let len = vhosts
            .iter()
            .filter_map(|v| h.vhosts.get(v).map(VecDeque::len))
            .max()
            .unwrap_or(0);
        // Sum the aligned tails.
        let mut sums = vec![VHostSample::default(); len];
        for v in vhosts {
            if let Some(series) = h.vhosts.get(v) {
                let offset = len - series.len();
                for (i, s) in series.iter().enumerate() {
                    let t = &mut sums[offset + i];
                    t.counters += s.counters;
                    t.ready += s.ready;
                    t.unacked += s.unacked;
                }
            }
        }
        let times: Vec<u64> = Self::times(&h, len).collect();
        drop(h);
        let series = |f: &dyn Fn(&VHostSample) -> u64| -> Vec<(u64, u64)> {
            times.iter().copied().zip(sums.iter().map(f)).collect()
        };
        /// (name, value now, its value in a sample).
        type Counter<'a> = (&'a str, u64, &'a dyn Fn(&VHostSample) -> u64);
        let counters: [Counter<'_>; 12] = [
            ("publish", now.received, &|s| s.counters.received),
            ("confirm", now.confirmed, &|s| s.counters.confirmed),
            ("deliver_get", now.delivered(), &|s| s.counters.delivered()),
            ("deliver", now.delivered_consume_manual_ack, &|s| {
                s.counters.delivered_consume_manual_ack
            }),
            ("deliver_no_ack", now.delivered_consume_auto_ack, &|s| {
                s.counters.delivered_consume_auto_ack
            }),
            ("get", now.delivered_get_manual_ack, &|s| {
                s.counters.delivered_get_manual_ack
            }),
            ("get_no_ack", now.delivered_get_auto_ack, &|s| {
                s.counters.delivered_get_auto_ack
            }),
            ("get_empty", now.get_empty, &|s| s.counters.get_empty),
            ("redeliver", now.redelivered, &|s| s.counters.redelivered),
            ("ack", now.acked, &|s| s.counters.acked),
            ("drop_unroutable", now.unroutable_dropped, &|s| {
                s.counters.unroutable_dropped
            }),
            ("return_unroutable", now.unroutable_returned, &|s| {
                s.counters.unroutable_returned
            }),
        ];
        let mut stats = Map::new();
        for (name, value, f) in counters {
            stats.insert(name.into(), json!(value));
            stats.insert(
                format!("{name}_details"),
                details(&series(f), q.messages(), true),
            );
        }
        let mut lengths = Map::new();
        for (name, f) in [
            (
                "messages",
                &(|s: &VHostSample| s.ready + s.unacked) as &dyn Fn(&VHostSample) -> u64,
            ),
            ("messages_ready", &|s: &VHostSample| s.ready),
            ("messages_unacknowledged", &|s: &VHostSample| s.unacked),
        ] {
            lengths.insert(
                format!("{name}_details"),
                details(&series(f), q.lengths(), false),
            );
        }
        (Value::Object(stats), lengths)
    }

    /// One queue's `message_stats` (publish and deliver_get, as they are now, with rates) and
    /// its lengths' `*_details`.
    pub(crate) fn queue_json(
        &self,
        key: &(String, String),
        id: usize,
        now: &QueueFigures,
        q: &RateQuery,
    ) -> (Value, Map<String, Value>) {
        let h = self.lock();
        let samples: Vec<QueueFigures> = match h.queues.get(key) {
            Some(series) if series.id == id => series.samples.iter().copied().collect(),
            _ => Vec::new(),
        };
        let times: Vec<u64> = Self::times(&h, samples.len()).collect();
        drop(h);
        let series = |f: fn(&QueueFigures) -> u64| -> Vec<(u64, u64)> {
            times.iter().copied().zip(samples.iter().map(f)).collect()
        };
        let stats = json!({
            "publish": now.published,
            "publish_details": details(&series(|f| f.published), q.messages(), true),
            "deliver_get": now.delivered,
            "deliver_get_details": details(&series(|f| f.delivered), q.messages(), true),
        });
        let mut lengths = Map::new();
        for (name, f) in [
            (
                "messages",
                (|f: &QueueFigures| f.ready + f.unacked) as fn(&QueueFigures) -> u64,
            ),
            ("messages_ready", |f: &QueueFigures| f.ready),
            ("messages_unacknowledged", |f: &QueueFigures| f.unacked),
        ] {
            lengths.insert(
                format!("{name}_details"),
                details(&series(f), q.lengths(), false),
            );
        }
        (stats, lengths)
    }

    /// Broker-wide churn rates and the node's memory and store series (`churn_rates` of
    /// `/api/overview`, and Lepus's own `lepus` object there).
    pub(crate) fn node_json(&self, q: &RateQuery) -> (Value, Value) {
        let h = self.lock();
        let samples: Vec<NodeSample> = h.node.iter().copied().collect();
        let times: Vec<u64> = Self::times(&h, samples.len()).collect();
        drop(h);
        let series = |f: fn(&NodeSample) -> u64| -> Vec<(u64, u64)> {
            times.iter().copied().zip(samples.iter().map(f)).collect()
        };
        let last = samples.last().copied().unwrap_or_default();
        let churn = json!({
            "connection_created": last.connections.0,
            "connection_created_details": details(&series(|s| s.connections.0), q.messages(), true),
            "connection_closed": last.connections.1,
            "connection_closed_details": details(&series(|s| s.connections.1), q.messages(), true),
            "channel_created": last.channels.0,
            "channel_created_details": details(&series(|s| s.channels.0), q.messages(), true),
            "channel_closed": last.channels.1,
            "channel_closed_details": details(&series(|s| s.channels.1), q.messages(), true),
        });
        let node = json!({
            "memory_used_details": details(&series(|s| s.memory_used), q.lengths(), false),
            "fsyncs_details": details(&series(|s| s.fsyncs), q.messages(), true),
            "store_bytes_written_details": details(&series(|s| s.store_bytes), q.messages(), true),
        });
        (churn, node)
    }
}

/// Samples every [`INTERVAL`] until `shutdown` fires.
pub(crate) async fn run(ctx: Ctx, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ctx.rates.sample(&ctx),
            _ = shutdown.recv() => break,
        }
    }
}

#[cfg(test)]
mod tests;
