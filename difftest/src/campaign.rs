//! Running programs on both brokers, comparing, shrinking failures, and printing them as
//! ready-to-paste regression tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus_broker::Broker;
use tokio::sync::Mutex;

use crate::client::Endpoint;
use crate::generate::{self, Shape};
use crate::program::{OpKind, Program, Props};
use crate::runner::{self, RunConfig};
use crate::trace::{compare, Divergence, Trace};

/// The broker under test.
#[derive(Clone, Debug)]
pub enum Tested {
    /// A fresh in-process bundled broker per run (on 127.0.0.1:0).
    InProcess,
    /// The broker at this URL (the `lepus-broker` binary, or RabbitMQ for a self-check).
    Url(String),
}

/// Gives every run a name prefix no other run of any process uses on the same broker.
pub struct Prefixes {
    process: u64,
    next: AtomicU64,
}

impl Default for Prefixes {
    fn default() -> Prefixes {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Prefixes {
            process: (nanos ^ u64::from(std::process::id()).rotate_left(32)) & 0xffff_ffff,
            next: AtomicU64::new(0),
        }
    }
}

impl Prefixes {
    /// A fresh prefix, `dt<process>-<n>-`.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("dt{:08x}-{n}-", self.process)
    }
}

/// Everything a pair of runs needs.
pub struct Pair {
    /// RabbitMQ, the reference.
    pub reference: Endpoint,
    /// The broker under test.
    pub tested: Tested,
    /// Timing.
    pub config: RunConfig,
    /// Name prefixes.
    pub prefixes: Prefixes,
    /// Run the two sides one after the other (when they share a broker and vhost: the
    /// predeclared exchanges are shared, so concurrent runs would see each other's messages).
    pub sequential: bool,
}

impl Pair {
    /// Runs `program` on both brokers (at once unless `sequential`); returns (reference,
    /// tested) traces.
    pub async fn run(&self, program: &Program) -> Result<(Trace, Trace), String> {
        let (reference_prefix, tested_prefix) = (self.prefixes.next(), self.prefixes.next());
        let reference = runner::run(&self.reference, &reference_prefix, program, &self.config);
        let tested = run_tested(&self.tested, &tested_prefix, program, &self.config);
        let (a, b) = if self.sequential {
            let a = reference.await;
            (a, tested.await)
        } else {
            tokio::join!(reference, tested)
        };
        Ok((a?, b?))
    }

    /// Runs `program` on both and compares.
    pub async fn check(&self, program: &Program) -> Result<Option<(Divergence, Trace)>, String> {
        let (reference, tested) = self.run(program).await?;
        Ok(compare(&reference, &tested).map(|d| (d, reference)))
    }
}

/// Runs `program` on the broker under test.
pub async fn run_tested(
    tested: &Tested,
    prefix: &str,
    program: &Program,
    config: &RunConfig,
) -> Result<Trace, String> {
    match tested {
        Tested::Url(url) => {
            let endpoint = Endpoint::parse(url).map_err(|e| e.to_string())?;
            runner::run(&endpoint, prefix, program, config).await
        }
        Tested::InProcess => {
            let handle = Broker::builder()
                .listen("127.0.0.1:0")
                .start()
                .await
                .map_err(|e| format!("in-process broker: {e}"))?;
            let endpoint = Endpoint::parse(&handle.amqp_url()).map_err(|e| e.to_string())?;
            let trace = runner::run(&endpoint, prefix, program, config).await;
            handle.shutdown().await;
            trace
        }
    }
}

/// Creates `vhost` afresh on RabbitMQ with `rabbitmqctl` (a command line, e.g. `rabbitmqctl -n
/// node@localhost`) — deleting it first if it exists, so that nothing an earlier, interrupted
/// campaign left (queues bound to the predeclared exchanges, bindings between them) can route
/// this campaign's messages — and gives `user` every permission in it.
pub fn fresh_vhost(rabbitmqctl: &str, vhost: &str, user: &str) -> Result<(), String> {
    let mut words = rabbitmqctl.split_whitespace();
    let program = words.next().ok_or("empty rabbitmqctl command")?;
    let base: Vec<&str> = words.collect();
    let run = |args: &[&str]| {
        std::process::Command::new(program)
            .args(&base)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))
    };
    // Fails when the vhost does not exist, which is fine.
    run(&["delete_vhost", vhost])?;
    let add = run(&["add_vhost", vhost])?;
    let stderr = String::from_utf8_lossy(&add.stderr);
    if !add.status.success() {
        return Err(format!("{rabbitmqctl} add_vhost {vhost}: {stderr}"));
    }
    let perms = run(&["set_permissions", "-p", vhost, user, ".*", ".*", ".*"])?;
    if !perms.status.success() {
        return Err(format!(
            "{rabbitmqctl} set_permissions -p {vhost}: {}",
            String::from_utf8_lossy(&perms.stderr)
        ));
    }
    Ok(())
}

/// How long shrinking may take per failure.
#[derive(Clone, Debug)]
pub struct ShrinkBudget {
    /// The most runs (pairs).
    pub runs: usize,
    /// The most wall time.
    pub time: Duration,
}

impl Default for ShrinkBudget {
    fn default() -> ShrinkBudget {
        ShrinkBudget {
            runs: 400,
            time: Duration::from_secs(180),
        }
    }
}

/// A shrunk failure.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The short program.
    pub program: Program,
    /// Its divergence.
    pub divergence: Divergence,
    /// RabbitMQ's trace of it (the expected side of the regression test).
    pub reference: Trace,
    /// Pair runs spent.
    pub runs: usize,
}

/// Shrinks `program` (which diverged with `signature`) to a shorter program that still
/// diverges with the same signature: cut after the diverging operation, delete chunks of
/// operations (halving the chunk size down to one), then simplify the remaining ones.
pub async fn shrink(
    pair: &Pair,
    program: &Program,
    first: &Divergence,
    budget: &ShrinkBudget,
) -> Option<Shrunk> {
    let signature = first.signature();
    let start = Instant::now();
    let mut runs = 0usize;
    let mut best: Option<Shrunk> = None;
    let mut current = program.clone();
    if let Some(i) = first.op_index {
        current.ops.truncate(i + 1);
    }
    // Tries `candidate`; keeps it when it still fails the same way.
    macro_rules! attempt {
        ($candidate:expr) => {{
            let candidate: Program = $candidate;
            if runs >= budget.runs || start.elapsed() > budget.time {
                false
            } else {
                runs += 1;
                match pair.check(&candidate).await {
                    Ok(Some((d, reference))) if d.signature() == signature => {
                        let mut kept = candidate;
                        if let Some(i) = d.op_index {
                            kept.ops.truncate(i + 1);
                        }
                        best = Some(Shrunk {
                            program: kept.clone(),
                            divergence: d,
                            reference,
                            runs,
                        });
                        current = kept;
                        true
                    }
                    _ => false,
                }
            }
        }};
    }
    if !attempt!(current.clone()) {
        // Cutting after the diverging operation lost it (or it does not reproduce): try the
        // whole program once.
        current = program.clone();
        if !attempt!(current.clone()) {
            return None;
        }
    }
    for _pass in 0..2 {
        let before = current.ops.len();
        let mut chunk = (current.ops.len() / 2).max(1);
        loop {
            let mut i = 0;
            while i < current.ops.len() {
                let mut candidate = current.clone();
                let end = (i + chunk).min(candidate.ops.len());
                candidate.ops.drain(i..end);
                if candidate.ops.is_empty() || !attempt!(candidate) {
                    i += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
        let mut i = 0;
        while i < current.ops.len() {
            for simpler in simplifications(&current.ops[i].kind) {
                let mut candidate = current.clone();
                candidate.ops[i].kind = simpler;
                if attempt!(candidate) {
                    break;
                }
            }
            i += 1;
        }
        let mut candidate = current.clone();
        if candidate.frame_max != 131_072 || !candidate.no_cancel_notify.is_empty() {
            candidate.frame_max = 131_072;
            candidate.no_cancel_notify.clear();
            attempt!(candidate);
        }
        if current.ops.len() == before {
            break;
        }
    }
    best.map(|mut b| {
        b.runs = runs;
        b
    })
}

/// Simpler variants of one operation, simplest first.
fn simplifications(kind: &OpKind) -> Vec<OpKind> {
    let mut out = Vec::new();
    let empty = amq_protocol::types::FieldTable::default();
    match kind {
        OpKind::Publish {
            x,
            key,
            mandatory,
            immediate,
            props,
            body,
        } => {
            let base = |props: Props, body: u32, mandatory: bool| OpKind::Publish {
                x: *x,
                key: key.clone(),
                mandatory,
                immediate: *immediate,
                props,
                body,
            };
            if *props != Props::default() {
                out.push(base(Props::default(), *body, *mandatory));
                let mut fewer = props.clone();
                fewer.headers = None;
                if fewer != *props {
                    out.push(base(fewer, *body, *mandatory));
                }
            }
            if *body > 8 {
                out.push(base(props.clone(), 4, *mandatory));
            }
            if *mandatory {
                out.push(base(props.clone(), *body, false));
            }
        }
        OpKind::QueueDeclare {
            q,
            passive,
            durable,
            exclusive,
            auto_delete,
            args,
        } => {
            let base = |args: &amq_protocol::types::FieldTable, d: bool, e: bool, a: bool| {
                OpKind::QueueDeclare {
                    q: *q,
                    passive: *passive,
                    durable: d,
                    exclusive: e,
                    auto_delete: a,
                    args: args.clone(),
                }
            };
            if !args.inner().is_empty() {
                out.push(base(&empty, *durable, *exclusive, *auto_delete));
                for k in args.inner().keys() {
                    let mut fewer = args.clone();
                    let map: BTreeMap<_, _> = fewer
                        .inner()
                        .iter()
                        .filter(|(kk, _)| *kk != k)
                        .map(|(a, b)| (a.clone(), b.clone()))
                        .collect();
                    fewer = map.into();
                    out.push(base(&fewer, *durable, *exclusive, *auto_delete));
                }
            }
            if *durable {
                out.push(base(args, false, *exclusive, *auto_delete));
            }
            if *exclusive {
                out.push(base(args, *durable, false, *auto_delete));
            }
            if *auto_delete {
                out.push(base(args, *durable, *exclusive, false));
            }
        }
        OpKind::ExchangeDeclare {
            x,
            kind: k,
            passive,
            durable,
            auto_delete,
            internal,
            args,
        } if !args.inner().is_empty() || *durable || *auto_delete || *internal => {
            out.push(OpKind::ExchangeDeclare {
                x: *x,
                kind: *k,
                passive: *passive,
                durable: false,
                auto_delete: false,
                internal: false,
                args: empty.clone(),
            });
        }
        OpKind::QueueBind { q, x, key, args } if !args.inner().is_empty() => {
            out.push(OpKind::QueueBind {
                q: *q,
                x: *x,
                key: key.clone(),
                args: empty,
            });
        }
        OpKind::Consume {
            q,
            tag,
            no_ack,
            exclusive,
            args,
        } if !args.inner().is_empty() || *exclusive => {
            out.push(OpKind::Consume {
                q: *q,
                tag: *tag,
                no_ack: *no_ack,
                exclusive: false,
                args: empty,
            });
        }
        _ => {}
    }
    out
}

/// A regression test for `shrunk`, ready to paste into the `regressions!` block of
/// `difftest/tests/regressions.rs`.
pub fn test_case(name: &str, origin: &str, shrunk: &Shrunk) -> String {
    let about = format!(
        "{origin}\n/// {}",
        shrunk.divergence.signature().replace('\n', " ")
    );
    regression_test(name, &about, &shrunk.program, &shrunk.reference)
}

/// A regression test: `program` must give `expected` (RabbitMQ's trace of it), as one case
/// of the `regressions!` block in `difftest/tests/regressions.rs` (which makes it a
/// `#[tokio::test]` named `name`).
pub fn regression_test(name: &str, about: &str, program: &Program, expected: &Trace) -> String {
    format!(
        "/// {about}\n{name}: r#\"\n{program}\"# => r#\"\n{}\"#;\n",
        expected.render()
    )
}

/// The outcome of a campaign.
#[derive(Debug, Default)]
pub struct Report {
    /// Programs run.
    pub programs: u64,
    /// Operations run (per broker).
    pub operations: u64,
    /// Divergences by signature: count and the first (seed, index).
    pub divergences: BTreeMap<String, (u64, u64, u64)>,
    /// Divergences that did not recur when their program was run again
    /// ([`CONFIRM_RERUNS`] times), by signature: timing noise of a loaded machine, or a
    /// race. Printed, kept out of [`Report::failed`].
    pub unconfirmed: BTreeMap<String, (u64, u64, u64)>,
    /// Shrunk test cases, one per signature (when shrinking is on).
    pub cases: Vec<String>,
    /// Runs the tester could not complete (no broker, ...).
    pub errors: Vec<String>,
}

impl Report {
    /// Programs that diverged.
    pub fn failed(&self) -> u64 {
        self.divergences.values().map(|v| v.0).sum()
    }
}

/// How many times a diverging program is run again before its divergence counts: it counts
/// if any rerun diverges the same way. A deterministic difference always recurs; one that
/// never does is reported as unconfirmed (RabbitMQ's own asynchrony under load: see
/// "Noise" in the README).
pub const CONFIRM_RERUNS: u32 = 2;

/// A campaign: programs `first..first + count` of `seed`.
pub struct Campaign {
    /// The brokers, one pair per worker (programs run at once must not share a RabbitMQ
    /// vhost: the predeclared exchanges would carry one's messages to the other's queues).
    pub pairs: Vec<Arc<Pair>>,
    /// Generator seed.
    pub seed: u64,
    /// First program index.
    pub first: u64,
    /// How many programs.
    pub count: u64,
    /// Program shape.
    pub shape: Shape,
    /// Shrink one failure per signature.
    pub shrink: Option<ShrinkBudget>,
    /// Print a progress line every this many programs (0: never).
    pub progress_every: u64,
    /// Stop after this many diverging programs (0: never).
    pub max_failures: u64,
}

impl Campaign {
    /// Runs the campaign; prints progress and failures to stderr as they come.
    pub async fn run(&self) -> Report {
        let report = Arc::new(Mutex::new(Report::default()));
        let next = Arc::new(AtomicU64::new(self.first));
        let end = self.first + self.count;
        let started = Instant::now();
        let mut workers = Vec::new();
        for pair in &self.pairs {
            let pair = pair.clone();
            let report = report.clone();
            let next = next.clone();
            let shape = self.shape.clone();
            let seed = self.seed;
            let shrink_budget = self.shrink.clone();
            let progress_every = self.progress_every;
            let max_failures = self.max_failures;
            workers.push(tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= end {
                        return;
                    }
                    if max_failures > 0 && report.lock().await.failed() >= max_failures {
                        return;
                    }
                    let program = generate::program(seed, index, &shape);
                    let mut outcome = pair.check(&program).await;
                    if let Ok(Some((d, _))) = &outcome {
                        let sig = d.signature();
                        let mut recurred = false;
                        for _ in 0..CONFIRM_RERUNS {
                            if let Ok(Some((again, _))) = pair.check(&program).await {
                                if again.signature() == sig {
                                    recurred = true;
                                    break;
                                }
                            }
                        }
                        if !recurred {
                            eprintln!(
                                "UNCONFIRMED seed {seed} program {index} ({sig}): did not recur in \
                                 {CONFIRM_RERUNS} reruns\n{}",
                                d.describe()
                            );
                            let mut r = report.lock().await;
                            r.unconfirmed.entry(sig).or_insert((0, seed, index)).0 += 1;
                            outcome = Ok(None);
                        }
                    }
                    let mut shrink_this = None;
                    {
                        let mut r = report.lock().await;
                        r.programs += 1;
                        r.operations += program.ops.len() as u64;
                        match outcome {
                            Err(e) => r.errors.push(format!("seed {seed} program {index}: {e}")),
                            Ok(None) => {}
                            Ok(Some((d, _))) => {
                                let sig = d.signature();
                                let entry = r.divergences.entry(sig.clone()).or_insert((0, seed, index));
                                entry.0 += 1;
                                if entry.0 == 1 {
                                    eprintln!(
                                        "DIVERGENCE seed {seed} program {index} ({sig})\n{}",
                                        d.describe()
                                    );
                                    if shrink_budget.is_some() {
                                        shrink_this = Some(d);
                                    }
                                }
                            }
                        }
                        if progress_every > 0 && r.programs % progress_every == 0 {
                            eprintln!(
                                "{} programs, {} operations, {} diverged ({} kinds), {} unconfirmed, {:.0} s",
                                r.programs,
                                r.operations,
                                r.failed(),
                                r.divergences.len(),
                                r.unconfirmed.values().map(|v| v.0).sum::<u64>(),
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                    if let (Some(d), Some(budget)) = (shrink_this, &shrink_budget) {
                        let case = match shrink(&pair, &program, &d, budget).await {
                            Some(s) => {
                                let text = test_case(
                                    &format!("seed_{seed}_program_{index}"),
                                    &format!(
                                        "difftest seed {seed} program {index}, shrunk from {} to {} operations in {} runs",
                                        program.ops.len(),
                                        s.program.ops.len(),
                                        s.runs
                                    ),
                                    &s,
                                );
                                eprintln!("SHRUNK seed {seed} program {index}:\n{}\n{text}", s.divergence.describe());
                                text
                            }
                            None => {
                                let text = format!(
                                    "// seed {seed} program {index}: did not reproduce while shrinking (flaky?)\n"
                                );
                                eprintln!("{text}");
                                text
                            }
                        };
                        report.lock().await.cases.push(case);
                    }
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
        let mut r = report.lock().await;
        std::mem::take(&mut *r)
    }
}
