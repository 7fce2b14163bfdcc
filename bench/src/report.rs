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
    /// Scenario name (`throughput`, `fanout`, `backlog`, `rpc`).
    pub(crate) scenario: &'static str,
    /// The options it ran with.
    pub(crate) params: serde_json::Value,
    /// What was counted: `msgs` or `calls`.
    pub(crate) unit: &'static str,
    /// Messages published (calls made).
    pub(crate) sent: u64,
    /// Messages delivered to consumers (replies received).
    pub(crate) received: u64,
    /// Publishes confirmed by the broker (0 without confirms).
    pub(crate) confirmed: u64,
    /// Seconds from the first publish to the last.
    pub(crate) in_secs: f64,
    /// Seconds from the first publish to the last delivery.
    pub(crate) out_secs: f64,
    /// `sent / in_secs`.
    pub(crate) rate_in: f64,
    /// `received / out_secs`.
    pub(crate) rate_out: f64,
    /// Publish-to-delivery (or call round-trip) latency.
    pub(crate) latency: Option<LatencySummary>,
    /// Broker and bench CPU, broker memory.
    #[serde(flatten)]
    pub(crate) resources: ResourceUse,
    /// Scenario-specific figures (e.g. `order_ok`, `fill_secs`).
    pub(crate) extra: BTreeMap<&'static str, serde_json::Value>,
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report {
    /// Fills in the rates from the counts and intervals.
    pub(crate) fn with_rates(mut self) -> Self {
        self.rate_in = rate(self.sent, self.in_secs);
        self.rate_out = rate(self.received, self.out_secs);
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
                format!("{} / {}", self.sent, self.received),
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
        if self.confirmed > 0 {
            rows.push(("confirmed".into(), self.confirmed.to_string()));
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
