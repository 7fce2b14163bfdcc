//! RabbitMQ's published monitoring works on Lepus unchanged (issue 20, "Done means" 2): every
//! metric name, and every label, that RabbitMQ's "RabbitMQ-Overview" Grafana dashboard and
//! RabbitMQ's Prometheus alert rules use is served by Lepus's Prometheus endpoints.
//!
//! The dashboard and the rules are checked in, unmodified, under `tests/fixtures/rabbitmq/`
//! (with their MPL-2.0 licence). The test reads every PromQL expression in them (the panels'
//! `expr`, the dashboard variables' `label_values(...)`, the rules' `expr`), extracts each
//! metric selector with its label matchers and each label named in `by`, `on` and
//! `group_left`, and checks them against what an in-process broker with real traffic serves:
//! - a `rabbitmq_*` or `erlang_vm_*` name must be a family the endpoint serves (`/metrics`,
//!   aggregated as RabbitMQ's default; `rabbitmq_detailed_*` at `/metrics/detailed` with the
//!   families RabbitMQ's per-object rules are scraped with);
//! - a label in a matcher must be on the family's samples, and an `=` matcher with a literal
//!   value (such as `le="1e+06"` or `vhost="/"`) must match a sample;
//! - a label `group_left(...)` copies must be on the selector it copies from; labels in
//!   `by(...)`/`on(...)` must come from some selector of the expression.
//!
//! Not checked, and why: labels a Prometheus scrape adds (`instance`, `job`, and on Kubernetes
//! `namespace`, `pod`, `container`, `endpoint`), and the metrics of other exporters the rules
//! join with (`kube_*` from kube-state-metrics, `ALERTS` from Prometheus itself).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;

mod common;
use common::prometheus::parse_prometheus;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rabbitmq");

/// Labels a Prometheus scrape (plain or through the Kubernetes operator) attaches.
const SCRAPE_LABELS: &[&str] = &[
    "instance",
    "job",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service",
];

/// Metrics of other exporters that the rules join with.
fn other_exporter(name: &str) -> bool {
    name.starts_with("kube_") || name == "ALERTS" || name.starts_with("ALERTS:")
}

/// A metric selector: name and label matchers (label, operator, value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
    /// Labels a `group_left`/`group_right` before it copies from it.
    copied: Vec<String>,
}

/// What one expression uses.
#[derive(Debug, Default)]
struct Uses {
    selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring` clauses (and `label_values`' label).
    join_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Op(String),
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '[' {
            // A range (`[5m]`, `[$__rate_interval]`): no metric in it.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() {
            // A number or a duration (`1m`, `0.8`, `60*60*24`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let mut s = String::new();
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$'))
            {
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Ident(s));
        } else if matches!(c, '=' | '!' | '<' | '>') {
            let mut s = c.to_string();
            if i + 1 < chars.len() && matches!(chars[i + 1], '=' | '~') {
                s.push(chars[i + 1]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Op(s));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

const CLAUSES: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool"];
/// Aggregation operators, which may be followed by `by (...)` before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The selectors and join labels of one PromQL expression (or Grafana `label_values` query).
fn uses_of(expr: &str) -> Uses {
    let toks = tokenize(expr);
    let mut uses = Uses::default();
    let mut pending_copy: Vec<String> = Vec::new();
    let mut i = 0;
    let label_list = |i: &mut usize| -> Vec<String> {
        // At `(`: identifiers up to `)`.
        let mut labels = Vec::new();
        *i += 1;
        while *i < toks.len() && toks[*i] != Tok::Punct(')') {
            if let Tok::Ident(l) = &toks[*i] {
                labels.push(l.clone());
            }
            *i += 1;
        }
        *i += 1;
        labels
    };
    // Tokens already read as something else (`label_values`' label).
    let mut skip: Vec<usize> = Vec::new();
    while i < toks.len() {
        if skip.contains(&i) {
            i += 1;
            continue;
        }
        let Tok::Ident(word) = &toks[i] else {
            i += 1;
            continue;
        };
        let next_is = |c: char| toks.get(i + 1) == Some(&Tok::Punct(c));
        if CLAUSES.contains(&word.as_str()) {
            if next_is('(') {
                i += 1;
                let labels = label_list(&mut i);
                if word.starts_with("group_") {
                    pending_copy = labels;
                } else {
                    uses.join_labels.extend(labels);
                }
            } else {
                i += 1;
            }
            continue;
        }
        if KEYWORDS.contains(&word.as_str())
            || AGGREGATIONS.contains(&word.as_str())
            || word.starts_with('$')
        {
            i += 1;
            continue;
        }
        if word == "label_values" && next_is('(') {
            // `label_values(selector, label)`: the label must be on the selector.
            if let Some(close) = toks[i..].iter().rposition(|t| *t == Tok::Punct(')')) {
                if let Some(Tok::Ident(label)) = toks.get(i + close - 1) {
                    uses.join_labels.push(label.clone());
                    skip.push(i + close - 1);
                }
            }
            i += 2;
            continue;
        }
        if next_is('(') {
            // A function or aggregation.
            i += 1;
            continue;
        }
        // A metric selector.
        let mut sel = Selector {
            name: word.clone(),
            matchers: Vec::new(),
            copied: std::mem::take(&mut pending_copy),
        };
        i += 1;
        if toks.get(i) == Some(&Tok::Punct('{')) {
            i += 1;
            while i < toks.len() && toks[i] != Tok::Punct('}') {
                if let (Some(Tok::Ident(l)), Some(Tok::Op(op)), Some(Tok::Str(v))) =
                    (toks.get(i), toks.get(i + 1), toks.get(i + 2))
                {
                    sel.matchers.push((l.clone(), op.clone(), v.clone()));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            i += 1;
        }
        uses.selectors.push(sel);
    }
    uses
}

/// Every PromQL expression of the Grafana dashboard: panel targets and variable queries.
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/RabbitMQ-Overview.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("query" | "definition", serde_json::Value::String(s))
                            if s.starts_with("label_values(") =>
                        {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    walk(&json, &mut out);
    out
}

/// Every `expr` of the alert and recording rules (YAML: inline or a `|` block).
fn rule_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(format!("{FIXTURES}/rules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let trimmed = line.trim_start().trim_start_matches("- ");
            if let Some(rest) = trimmed.strip_prefix("expr:") {
                let rest = rest.trim();
                // The key's column: a block scalar's lines are indented deeper.
                let indent = line.len() - trimmed.len();
                if rest.starts_with('|') || rest.is_empty() {
                    let mut block = String::new();
                    i += 1;
                    while i < lines.len()
                        && (lines[i].trim().is_empty()
                            || lines[i].len() - lines[i].trim_start().len() > indent)
                    {
                        block.push_str(lines[i].trim());
                        block.push('\n');
                        i += 1;
                    }
                    out.push((path.display().to_string(), block));
                    continue;
                }
                out.push((path.display().to_string(), rest.to_owned()));
            }
            i += 1;
        }
    }
    out
}

/// Samples of one endpoint, by family name: the label sets of its samples.
type Served = HashMap<String, Vec<BTreeMap<String, String>>>;

fn served(text: &str) -> Served {
    let mut out: Served = HashMap::new();
    // Families declared without samples are served too (an empty family).
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.split(' ').next())
        {
            out.entry(name.to_owned()).or_default();
        }
    }
    for series in parse_prometheus(text).keys() {
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series.as_str(), ""),
        };
        let mut set = BTreeMap::new();
        // Label values here contain no `,` or `"` (names of this test's objects).
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            set.insert(k.to_owned(), v.trim_matches('"').to_owned());
        }
        out.entry(name.to_owned()).or_default().push(set);
    }
    out
}

/// Problems with one expression against what the endpoints serve.
fn check(expr: &str, aggregated: &Served, detailed: &Served, problems: &mut BTreeSet<String>) {
    let uses = uses_of(expr);
    let mut available: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
    for sel in &uses.selectors {
        if other_exporter(&sel.name) {
            continue;
        }
        let endpoint = if sel.name.starts_with("rabbitmq_detailed_") {
            detailed
        } else {
            aggregated
        };
        let Some(samples) = endpoint.get(&sel.name) else {
            problems.insert(format!("{}: not served", sel.name));
            continue;
        };
        for s in samples {
            available.extend(s.keys().cloned());
        }
        let has_label =
            |l: &str| SCRAPE_LABELS.contains(&l) || samples.iter().any(|s| s.contains_key(l));
        for (label, op, value) in &sel.matchers {
            if !has_label(label) {
                problems.insert(format!("{}: no label {label}", sel.name));
            } else if op == "="
                && !value.contains('$')
                && !SCRAPE_LABELS.contains(&label.as_str())
                && !samples.iter().any(|s| s.get(label) == Some(value))
            {
                problems.insert(format!("{}: no sample with {label}=\"{value}\"", sel.name));
            }
        }
        for label in &sel.copied {
            if !has_label(label) {
                problems.insert(format!("{}: no label {label} to copy", sel.name));
            }
        }
    }
    // Labels of another exporter's metrics are not ours to check.
    let foreign = uses.selectors.iter().any(|s| other_exporter(&s.name));
    for label in &uses.join_labels {
        if !foreign && !available.contains(label) {
            problems.insert(format!(
                "label {label} (in `{}`) comes from no selector",
                expr.trim()
            ));
        }
    }
}

#[tokio::test]
async fn rabbitmq_dashboard_and_alert_rules_find_every_metric_and_label() {
    let broker = common::http::broker_with_management().await;
    // Real traffic: a queue in `/` (the per-object rules select vhost="/"), confirmed
    // publishes, a consumer's ack, gets, and unroutable messages both ways.
    let conn = common::amqp::connect_url(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "jobs".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (key, mandatory) in [
        ("jobs", false),
        ("jobs", false),
        ("nowhere", true),
        ("nowhere", false),
    ] {
        ch.basic_publish(
            "".into(),
            key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            &[7; 300],
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let got = ch
        .basic_get("jobs".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();

    let base = format!("http://{}", broker.management_addr().unwrap());
    let get = |path: String, auth: bool| {
        tokio::task::spawn_blocking(move || {
            let mut req = ureq::get(&path);
            if auth {
                req = req.header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=");
            }
            req.call().unwrap().body_mut().read_to_string().unwrap()
        })
    };
    let aggregated = get(format!("{base}/metrics"), false).await.unwrap();
    let detailed = get(
        format!("{base}/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count"),
        true,
    )
    .await
    .unwrap();
    let aggregated = served(&aggregated);
    let detailed = served(&detailed);

    // The counters moved with the traffic (so the panels show something).
    let proto = |name: &str| {
        aggregated[name]
            .iter()
            .find(|s| s.get("protocol").is_some_and(|p| p == "amqp091"))
            .is_some()
    };
    assert!(proto("rabbitmq_global_messages_received_total"));

    let dashboard = dashboard_expressions();
    let rules = rule_expressions();
    assert!(
        dashboard.len() >= 40,
        "{} dashboard expressions",
        dashboard.len()
    );
    assert!(rules.len() >= 14, "{} rule expressions", rules.len());
    let mut names = BTreeSet::new();
    let mut problems = BTreeSet::new();
    for expr in &dashboard {
        names.extend(uses_of(expr).selectors.into_iter().map(|s| s.name));
        check(expr, &aggregated, &detailed, &mut problems);
    }
    for (file, expr) in &rules {
        names.extend(uses_of(expr).selectors.into_iter().map(|s| s.name));
        let mut found = BTreeSet::new();
        check(expr, &aggregated, &detailed, &mut found);
        problems.extend(found.into_iter().map(|p| format!("{file}: {p}")));
    }
    // What the files use, so a parsing slip that found nothing cannot pass.
    for expected in [
        "rabbitmq_identity_info",
        "rabbitmq_build_info",
        "rabbitmq_global_messages_received_total",
        "rabbitmq_message_size_bytes_bucket",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_detailed_queue_consumers",
        "rabbitmq_alarms_memory_used_watermark",
        "rabbitmq_process_max_fds",
        "rabbitmq_disk_space_available_limit_bytes",
        "rabbitmq_channel_messages_unroutable_dropped_total",
        "erlang_vm_dist_node_state",
        "kube_statefulset_replicas",
    ] {
        assert!(
            names.contains(expected),
            "{expected} not found in the files"
        );
    }
    assert!(
        problems.is_empty(),
        "Lepus's /metrics lacks what RabbitMQ's dashboard and rules use:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
}

#[test]
fn the_promql_reader_finds_selectors_matchers_and_join_labels() {
    let u = uses_of(
        r#"sum(rate(a_total{x="1", y=~"b.*"}[5m]) * on(instance) group_left(c, d) info{e!="f"}) by (g) > 0.8 unless b offset 1m"#,
    );
    assert_eq!(
        u.selectors,
        vec![
            Selector {
                name: "a_total".into(),
                matchers: vec![
                    ("x".into(), "=".into(), "1".into()),
                    ("y".into(), "=~".into(), "b.*".into())
                ],
                copied: vec![],
            },
            Selector {
                name: "info".into(),
                matchers: vec![("e".into(), "!=".into(), "f".into())],
                copied: vec!["c".into(), "d".into()],
            },
            Selector {
                name: "b".into(),
                matchers: vec![],
                copied: vec![],
            },
        ]
    );
    assert_eq!(u.join_labels, ["instance", "g"]);
    let v =
        uses_of("label_values(rabbitmq_identity_info{namespace=\"$namespace\"},rabbitmq_cluster)");
    assert_eq!(v.selectors[0].name, "rabbitmq_identity_info");
    assert_eq!(v.join_labels, ["rabbitmq_cluster"]);
}

#[test]
fn a_missing_family_or_label_is_reported() {
    let served_text = "# TYPE m gauge\nm{a=\"1\"} 1\n";
    let s = served(served_text);
    let empty = Served::new();
    let mut problems = BTreeSet::new();
    check(
        "m{a=\"1\"} * on(instance) group_left(b) m",
        &s,
        &empty,
        &mut problems,
    );
    check("missing_metric", &s, &empty, &mut problems);
    check("m{a=\"2\"}", &s, &empty, &mut problems);
    check("sum(m) by (zzz)", &s, &empty, &mut problems);
    let problems: Vec<_> = problems.into_iter().collect();
    assert_eq!(
        problems,
        [
            "label zzz (in `sum(m) by (zzz)`) comes from no selector",
            "m: no label b to copy",
            "m: no sample with a=\"2\"",
            "missing_metric: not served",
        ]
    );
}
