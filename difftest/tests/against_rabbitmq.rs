//! The differential tester's CI budget: 200 programs of 60 operations each, run against
//! RabbitMQ (`LEPUS_TEST_AMQP_URL`) and a fresh in-process bundled broker per program; any
//! difference fails the test, with each kind shrunk and printed as a regression test.
//!
//! Ignored by default (it needs RabbitMQ); `.ci/run` runs it with `--ignored`. The seed is
//! fixed so that CI is repeatable (`DIFFTEST_SEED` overrides it); longer runs with other
//! seeds: `difftest/README.md`. `DIFFTEST_RABBITMQCTL` (e.g. `rabbitmqctl -n node@localhost`)
//! gives the programs a fresh vhost, away from anything left in `/`.

use std::sync::Arc;
use std::time::Duration;

use lepus_difftest::campaign::{fresh_vhost, Campaign, Pair, Prefixes, ShrinkBudget, Tested};
use lepus_difftest::client::Endpoint;
use lepus_difftest::generate::Shape;
use lepus_difftest::runner::RunConfig;

/// Programs and operations per program of the CI budget.
const PROGRAMS: u64 = 200;
const OPERATIONS: usize = 60;
/// The CI seed.
const SEED: u64 = 20_261_207;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ at LEPUS_TEST_AMQP_URL; run by .ci/run"]
async fn the_bundled_broker_behaves_as_rabbitmq_on_random_programs() {
    let url = std::env::var("LEPUS_TEST_AMQP_URL").expect("LEPUS_TEST_AMQP_URL names RabbitMQ");
    let mut reference = Endpoint::parse(&url).expect("LEPUS_TEST_AMQP_URL parses");
    if let Ok(ctl) = std::env::var("DIFFTEST_RABBITMQCTL") {
        fresh_vhost(&ctl, "difftest-ci", &reference.user).expect("a fresh vhost for the run");
        reference.vhost = "difftest-ci".into();
    }
    let seed = std::env::var("DIFFTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let campaign = Campaign {
        pairs: vec![Arc::new(Pair {
            reference,
            tested: Tested::InProcess,
            config: RunConfig::default(),
            prefixes: Prefixes::default(),
            sequential: false,
        })],
        seed,
        first: 0,
        count: PROGRAMS,
        shape: Shape {
            ops: OPERATIONS,
            ..Shape::default()
        },
        shrink: Some(ShrinkBudget {
            runs: 200,
            time: Duration::from_secs(60),
        }),
        progress_every: 50,
        max_failures: 0,
    };
    let report = campaign.run().await;
    eprintln!(
        "difftest: seed {seed}: {} programs, {} operations per broker, {} diverged",
        report.programs,
        report.operations,
        report.failed()
    );
    for (sig, (count, s, i)) in &report.unconfirmed {
        eprintln!(
            "difftest: {count} x unconfirmed (did not recur): {sig} (first: seed {s} program {i})"
        );
    }
    assert!(
        report.errors.is_empty(),
        "runs failed: {:#?}",
        report.errors
    );
    assert_eq!(report.programs, PROGRAMS);
    if report.failed() > 0 {
        let mut text = String::new();
        for (sig, (count, s, i)) in &report.divergences {
            text.push_str(&format!("{count} x {sig} (first: seed {s} program {i})\n"));
        }
        for case in &report.cases {
            text.push_str(case);
            text.push('\n');
        }
        panic!(
            "{} of {PROGRAMS} programs diverged from RabbitMQ:\n{text}",
            report.failed()
        );
    }
}
