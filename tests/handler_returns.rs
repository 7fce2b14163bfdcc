//! Issue 14, item 1: a handler's success or failure is decided by the type system, not by how
//! its return type is spelled. Tasks returning `anyhow::Result<()>`, `io::Result<()>`, a user
//! alias, `eyre::Result<()>` and `Result<(), Box<dyn Error + Send + Sync>>` that fail are retried
//! and dead-lettered (they used to be acked as successes); RPCs returning aliases give the
//! caller `Error::Remote(E)`; event handlers returning an alias fail the event.
//!
//! Runs on the bundled broker, or on the one `LEPUS_TEST_AMQP_URL` names (`.ci/run`: RabbitMQ).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use lepus::task::DeadLetters;
use lepus::testing::{Outcome, TestBed};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(20);

/// A user's own alias, as an application would declare it.
type JobResult = Result<(), JobError>;

#[derive(Debug, thiserror::Error)]
#[error("job error: {0}")]
struct JobError(String);

#[lepus::task(queue = "returns.anyhow", retries = 1, backoff = "10ms..10ms")]
async fn with_anyhow(fail: bool) -> anyhow::Result<()> {
    if fail {
        anyhow::bail!("anyhow says no");
    }
    Ok(())
}

#[lepus::task(queue = "returns.io", retries = 1, backoff = "10ms..10ms")]
async fn with_io(fail: bool) -> std::io::Result<()> {
    if fail {
        return Err(std::io::Error::other("io says no"));
    }
    Ok(())
}

#[lepus::task(queue = "returns.alias", retries = 1, backoff = "10ms..10ms")]
async fn with_alias(fail: bool) -> JobResult {
    if fail {
        return Err(JobError("alias says no".into()));
    }
    Ok(())
}

#[lepus::task(queue = "returns.eyre", retries = 1, backoff = "10ms..10ms")]
async fn with_eyre(fail: bool) -> eyre::Result<()> {
    if fail {
        eyre::bail!("eyre says no");
    }
    Ok(())
}

#[lepus::task(queue = "returns.boxed", retries = 1, backoff = "10ms..10ms")]
async fn with_box(fail: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if fail {
        return Err("boxed says no".into());
    }
    Ok(())
}

/// `anyhow::Result` imported under the name `Result`: one type argument, still a `Result`.
mod imported {
    use anyhow::Result;

    #[lepus::task(queue = "returns.imported", retries = 0)]
    pub(crate) async fn with_imported(fail: bool) -> Result<()> {
        if fail {
            anyhow::bail!("imported says no");
        }
        Ok(())
    }
}

/// Serves `handler`, enqueues a success and a failure with `enqueue`, and checks that the
/// success is acked and the failure retried once, then dead-lettered with `expected` as error.
async fn fails_then_dead_letters<F, Fut>(
    bed: &mut TestBed,
    handler: lepus::Handler,
    queue: &str,
    enqueue: F,
    expected: &str,
) where
    F: Fn(lepus::Client, bool) -> Fut,
    Fut: std::future::Future<Output = lepus::Result<lepus::TaskId>>,
{
    let mut done = bed.serve(handler).await.unwrap();
    enqueue(bed.client().clone(), false).await.unwrap();
    let ok = done.next_within(WAIT).await.unwrap();
    assert_eq!(
        ok.outcome,
        Outcome::Succeeded,
        "{queue}: a success is acked"
    );
    let id = enqueue(bed.client().clone(), true).await.unwrap();
    let seen = done
        .wait_until(WAIT, |c| matches!(c.outcome, Outcome::DeadLettered { .. }))
        .await
        .unwrap();
    let errors: Vec<_> = seen.iter().map(|c| c.outcome.clone()).collect();
    assert!(
        matches!(&errors[..], [Outcome::Retrying { error: first, .. }, Outcome::DeadLettered { error: last }]
            if first.contains(expected) && last.contains(expected)),
        "{queue}: retried once, then dead-lettered with {expected:?}; saw {errors:?}"
    );
    // The dead letter is in `<queue>.dead`, with the error in its headers.
    let dead = DeadLetters::new(bed.conn(), format!("{}.dead", queue_name(bed, queue)));
    let letters = dead.list(10).await.unwrap();
    let letter = letters
        .iter()
        .find(|l| l.message_id.as_deref() == Some(id.0.as_str()))
        .unwrap_or_else(|| {
            panic!("{queue}: the failed task is in the dead-letter queue: {letters:?}")
        });
    assert!(
        letter.error.as_deref().unwrap_or("").contains(expected),
        "{letter:?}"
    );
}

fn queue_name(bed: &TestBed, queue: &str) -> String {
    format!("{}{queue}", bed.prefix())
}

/// One test per task: `name: task, "the error it dead-letters with";` (each on a test bed of
/// its own, through [`fails_then_dead_letters`]).
macro_rules! fails_then_dead_letters_tests {
    ($($name:ident: $task:ident, $expected:literal;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let mut bed = common::test_bed("ret").await;
                fails_then_dead_letters(
                    &mut bed,
                    $task::handler(),
                    $task::QUEUE,
                    |c, fail| async move { $task::enqueue(&c, fail).await },
                    $expected,
                )
                .await;
                bed.stop().await;
            }
        )*
    };
}

/// Failing tasks returning `Result` aliases are retried and dead-lettered, one test per alias.
mod failing_tasks_returning_result_aliases_are_retried_and_dead_lettered {
    use super::*;

    fails_then_dead_letters_tests! {
        anyhow_result: with_anyhow, "anyhow says no";
        io_result: with_io, "io says no";
        user_alias: with_alias, "job error: alias says no";
        eyre_result: with_eyre, "eyre says no";
        boxed_error: with_box, "boxed says no";
    }

    /// `retries = 0`: the first failure dead-letters it.
    #[tokio::test]
    async fn imported_result_without_retries() {
        let mut bed = common::test_bed("ret").await;
        let mut done = bed.serve(imported::with_imported::handler()).await.unwrap();
        imported::with_imported::enqueue(bed.client(), true)
            .await
            .unwrap();
        let failed = done.next_within(WAIT).await.unwrap();
        assert!(
            matches!(&failed.outcome, Outcome::DeadLettered { error } if error.contains("imported says no")),
            "{failed:?}"
        );
        bed.stop().await;
    }
}

/// The typed error of an accounts service, and an alias of `Result` over it.
#[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum AccountError {
    #[error("no account {0}")]
    NoSuchAccount(String),
}

type AccountResult<T> = Result<T, AccountError>;

#[lepus::rpc(queue = "returns.rpc")]
async fn balance(account: String) -> AccountResult<u64> {
    match account.as_str() {
        "ann" => Ok(42),
        _ => Err(AccountError::NoSuchAccount(account)),
    }
}

#[lepus::rpc(queue = "returns.rpc")]
async fn parse_amount(text: String) -> anyhow::Result<u64> {
    use anyhow::Context;
    text.parse::<u64>()
        .with_context(|| format!("amount {text:?} is not a number"))
}

#[lepus::rpc(queue = "returns.rpc")]
async fn read_ledger(name: String) -> std::io::Result<String> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("ledger {name} not found"),
    ))
}

#[lepus::rpc(queue = "returns.rpc")]
async fn check(limit: u32) -> eyre::Result<u32> {
    if limit > 10 {
        eyre::bail!("limit {limit} is over 10");
    }
    Ok(limit)
}

#[lepus::rpc(queue = "returns.rpc")]
async fn boxed(n: u32) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Err(format!("{n} is boxed").into())
}

#[tokio::test]
async fn rpcs_returning_result_aliases_give_the_caller_a_remote_error() {
    let mut bed = common::test_bed("ret").await;
    bed.worker(|w| {
        w.serve([
            balance::handler(),
            parse_amount::handler(),
            read_ledger::handler(),
            check::handler(),
            boxed::handler(),
        ])
    })
    .await
    .unwrap();
    let client = bed.client();

    // A user alias over a serde error: typed, matchable.
    assert_eq!(balance::call(client, "ann".into()).await.unwrap(), 42);
    match balance::call(client, "bob".into()).await {
        Err(lepus::Error::Remote(AccountError::NoSuchAccount(who))) => assert_eq!(who, "bob"),
        other => panic!("expected Remote(NoSuchAccount), got {other:?}"),
    }
    // anyhow: the caller gets an `anyhow::Error` holding the worker's text, causes included.
    assert_eq!(parse_amount::call(client, "12".into()).await.unwrap(), 12);
    match parse_amount::call(client, "twelve".into()).await {
        Err(lepus::Error::Remote(err)) => {
            let text = format!("{err:#}");
            assert!(text.contains("amount \"twelve\" is not a number"), "{text}");
            assert!(
                text.contains("invalid digit"),
                "the cause travels too: {text}"
            );
        }
        other => panic!("expected Remote(anyhow::Error), got {other:?}"),
    }
    // io::Error, eyre::Report, Box<dyn Error>: rebuilt from the worker's text.
    match read_ledger::call(client, "q3".into()).await {
        Err(lepus::Error::Remote(err)) => assert_eq!(err.to_string(), "ledger q3 not found"),
        other => panic!("expected Remote(io::Error), got {other:?}"),
    }
    assert_eq!(check::call(client, 3).await.unwrap(), 3);
    match check::call(client, 11).await {
        Err(lepus::Error::Remote(err)) => assert_eq!(err.to_string(), "limit 11 is over 10"),
        other => panic!("expected Remote(eyre::Report), got {other:?}"),
    }
    match boxed::call(client, 7).await {
        Err(lepus::Error::Remote(err)) => assert_eq!(err.to_string(), "7 is boxed"),
        other => panic!("expected Remote(Box<dyn Error>), got {other:?}"),
    }
    bed.stop().await;
}

#[lepus::event(exchange = "returns.events", kind = "fanout", delivery = "broadcast")]
async fn audit(line: String) -> anyhow::Result<()> {
    anyhow::ensure!(!line.is_empty(), "empty audit line");
    Ok(())
}

#[tokio::test]
async fn event_handlers_returning_an_alias_fail_the_event() {
    let mut bed = common::test_bed("ret").await;
    let mut done = bed.serve(audit::handler()).await.unwrap();
    audit::publish(bed.client(), "", &"ok".to_owned())
        .await
        .unwrap();
    assert_eq!(
        done.next_within(WAIT).await.unwrap().outcome,
        Outcome::Succeeded
    );
    audit::publish(bed.client(), "", &String::new())
        .await
        .unwrap();
    let failed = done.next_within(WAIT).await.unwrap();
    assert_eq!(
        failed.outcome,
        Outcome::Failed {
            error: "empty audit line".into()
        }
    );
    bed.stop().await;
}
