//! Replaying a kept failure: a program and the trace RabbitMQ gave for it, checked against the
//! broker of the test suite (the in-process bundled broker, or the one `LEPUS_TEST_AMQP_URL`
//! names — so the expectation is re-checked against RabbitMQ in CI too).

use crate::campaign::{run_tested, Prefixes, Tested};
use crate::program::Program;
use crate::runner::RunConfig;
use crate::trace::{compare, Trace};

/// The environment variable naming an external broker (as in the workspace's tests).
pub const EXTERNAL_URL_VAR: &str = "LEPUS_TEST_AMQP_URL";

/// Runs `program` (text) and panics with the difference unless the broker's trace equals
/// `expected` (text, as RabbitMQ gave it).
pub async fn check(program: &str, expected: &str) {
    let program: Program = program
        .parse()
        .unwrap_or_else(|e| panic!("the program does not parse: {e}"));
    let expected = Trace::parse(expected);
    let tested = match std::env::var(EXTERNAL_URL_VAR) {
        Ok(url) => Tested::Url(url),
        Err(_) => Tested::InProcess,
    };
    let prefix = Prefixes::default().next();
    let actual = run_tested(&tested, &prefix, &program, &RunConfig::default())
        .await
        .unwrap_or_else(|e| panic!("cannot run the program: {e}"));
    if let Some(d) = compare(&expected, &actual) {
        panic!(
            "{}\nwhole trace of the broker under test:\n{}",
            d.describe(),
            actual.render()
        );
    }
}
