//! The final report of a scenario: a table for people, JSON for `bench/compare`.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::error::Result;
use crate::proc_stat::ResourceUse;
use crate::stats::LatencySummary;

/// Everything a scenario measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Scenario name (`throughput`, `fanout`, `backlog`, `rpc`, `tasks`).
    pub(crate) scenario: &'static str,
    /// The options it ran with.
    pub(crate) params: serde_json::Value,
    /// What was counted: `msgs`, `calls` or `tasks`.
    pub(crate) unit: &'static str,
    /// What was sent and received, and over which intervals.
    #[serde(flatten)]
    pub(crate) tally: Tally,
    /// `sent / in_secs`.
    rate_in: f64,
    /// `received / out_secs`.
    rate_out: f64,
    /// Publish-to-delivery (or call round-trip) latency.
    pub(crate) latency: Option<LatencySummary>,
    /// Broker and bench CPU, broker memory.
    #[serde(flatten)]
    pub(crate) resources: ResourceUse,
    /// Scenario-specific figures (e.g. `order_ok`, `fill_secs`).
    pub(crate) extra: BTreeMap<&'static str, serde_json::Value>,
}

/// The counts and intervals every scenario reports; [`Report::new`] derives the rates from them.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Tally {
    /// Messages published (calls made, tasks enqueued).
    pub(crate) sent: u64,
    /// Messages delivered to consumers (replies received, tasks run).
    pub(crate) received: u64,
    /// Publishes confirmed by the broker (0 without confirms).
    pub(crate) confirmed: u64,
    /// Seconds from the first publish to the last.
    pub(crate) in_secs: f64,
    /// Seconds from the first publish to the last delivery.
    pub(crate) out_secs: f64,
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report {
    /// A report of `tally` and `resources` with the rates filled in; no params (the scenario's
    /// entry point sets them), no latency and no extra figures yet.
    pub(crate) fn new(
        scenario: &'static str,
        unit: &'static str,
        tally: Tally,
        resources: ResourceUse,
    ) -> Self {
        Report {
            scenario,
            params: serde_json::Value::Null,
            unit,
            tally,
            rate_in: rate(tally.sent, tally.in_secs),
            rate_out: rate(tally.received, tally.out_secs),
            latency: None,
            resources,
            extra: BTreeMap::new(),
        }
    }

    /// The report with its latency summary.
    pub(crate) fn with_latency(mut self, latency: Option<LatencySummary>) -> Self {
        self.latency = latency;
        self
    }

    /// The report with its scenario-specific figures.
    pub(crate) fn with_extra(mut self, extra: BTreeMap<&'static str, serde_json::Value>) -> Self {
        self.extra = extra;
        self
    }

    /// Writes the report to stdout as a table or as JSON.
    pub(crate) fn print(&self, json: bool) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, self)?;
            let _ = writeln!(out);
            return Ok(());
        }
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.into()),
            ("params".into(), self.params.to_string()),
            (
                format!("{} sent / received", self.unit),
                format!("{} / {}", self.tally.sent, self.tally.received),
            ),
            (
                format!("{}/s in", self.unit),
                format!("{:.0}", self.rate_in),
            ),
            (
                format!("{}/s out", self.unit),
                format!("{:.0}", self.rate_out),
            ),
        ];
        if self.tally.confirmed > 0 {
            rows.push(("confirmed".into(), self.tally.confirmed.to_string()));
        }
        if let Some(l) = self.latency {
            rows.push((
                "latency p50 / p95 / p99 / max".into(),
                format!(
                    "{} / {} / {} / {} µs",
                    l.p50_us, l.p95_us, l.p99_us, l.max_us
                ),
            ));
        }
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let mib = |v: Option<u64>| {
            v.map_or("-".to_owned(), |v| {
                format!("{:.1} MiB", v as f64 / 1048576.0)
            })
        };
        rows.push(("broker cpu s".into(), opt(self.resources.broker_cpu_s)));
        rows.push((
            "bench cpu s".into(),
            format!("{:.2}", self.resources.bench_cpu_s),
        ));
        rows.push((
            "broker peak rss (run)".into(),
            mib(self.resources.broker_peak_rss),
        ));
        rows.push((
            "broker VmHWM (life)".into(),
            mib(self.resources.broker_vm_hwm),
        ));
        for (k, v) in &self.extra {
            rows.push(((*k).into(), v.to_string()));
        }
        let w = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<w$}  {v}");
        }
        Ok(())
    }
}
