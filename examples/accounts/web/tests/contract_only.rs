//! Issue 16, "Done means" 1: a crate that depends on the contract only (this one: its
//! `[dependencies]` name `accounts-api`, not `accounts-server`) calls every method, gets typed
//! remote errors, times out cleanly, and gets `NoRoute` when no server runs. The server the
//! tests stand up is the real one (a dev-dependency), on the bundled broker or, when
//! `LEPUS_TEST_AMQP_URL` is set (`.ci/run`: RabbitMQ), on that broker.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use accounts_api::{AccountError, LimitError};
use accounts_server::{serve_accounts, serve_limits, Bank, DailyLimit, Db, Outbox};
use accounts_web::Front;
use lepus::testing::TestBed;
use lepus::Error;

/// A bundled broker, or the external one `LEPUS_TEST_AMQP_URL` names (queues under a prefix
/// of this test's own).
async fn bed(tag: &str) -> TestBed {
    match std::env::var("LEPUS_TEST_AMQP_URL") {
        Ok(url) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let prefix = format!("web-{tag}-{}-{nanos}-", std::process::id());
            TestBed::external(&url, &prefix).await.unwrap()
        }
        Err(_) => TestBed::start().await.unwrap(),
    }
}

/// Serves both services on `bed`, the limits service checking in `limit_delay`; returns the
/// bank's outbox.
async fn serve(bed: &mut TestBed, limit_delay: Duration) -> Outbox {
    let outbox = Outbox::default();
    let bank = Bank::new(Arc::new(Db::default()), bed.client());
    let (accounts_outbox, limits) = (
        outbox.clone(),
        DailyLimit {
            limit: 10_000,
            delay: limit_delay,
        },
    );
    bed.worker(|w| serve_accounts(w, bank, accounts_outbox))
        .await
        .unwrap();
    bed.worker(|w| serve_limits(w, limits)).await.unwrap();
    outbox
}

#[tokio::test]
async fn with_no_server_running_a_call_fails_at_once_with_no_route() {
    let bed = bed("noroute").await;
    let front = Front::new(bed.client(), Duration::from_secs(30));
    let started = Instant::now();
    match front.accounts().get_balance("alice".into()).await {
        Err(Error::NoRoute { .. }) => {}
        other => panic!("expected NoRoute, got {other:?}"),
    }
    // Not the 30 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    bed.stop().await;
}

#[tokio::test]
async fn every_method_answers_and_errors_come_back_typed() {
    let mut bed = bed("methods").await;
    let outbox = serve(&mut bed, Duration::ZERO).await;
    let front = Front::new(bed.client(), Duration::from_secs(10));
    let accounts = front.accounts();

    // open, deposit, withdraw (a nested call to the limits service and a task), get_balance.
    let (balance, overdraft) = front.session("alice").await.unwrap();
    assert_eq!(balance, 3_000);
    assert_eq!(
        overdraft,
        AccountError::InsufficientFunds {
            balance: 3_000,
            wanted: 9_900
        }
    );
    match accounts.open("alice".into()).await {
        Err(Error::Remote(AccountError::AlreadyExists(name))) => assert_eq!(name, "alice"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match accounts.get_balance("bob".into()).await {
        Err(Error::Remote(AccountError::NoSuchAccount(name))) => assert_eq!(name, "bob"),
        other => panic!("expected NoSuchAccount, got {other:?}"),
    }
    // The limits service's typed error, carried inside the accounts service's.
    accounts.deposit("alice".into(), 50_000).await.unwrap();
    match accounts.withdraw("alice".into(), 20_000).await {
        Err(Error::Remote(AccountError::Refused(LimitError::OverLimit { limit, wanted }))) => {
            assert_eq!((limit, wanted), (10_000, 20_000));
        }
        other => panic!("expected Refused(OverLimit), got {other:?}"),
    }
    accounts.open("carol".into()).await.unwrap();
    assert_eq!(
        accounts.list().await.unwrap(),
        vec![("alice".to_owned(), 53_000), ("carol".to_owned(), 0)]
    );

    // The one successful withdrawal enqueued its notification, which ran with its injected
    // state and the trace id of the call chain that enqueued it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = loop {
        let sent = outbox.sent();
        if !sent.is_empty() || Instant::now() > deadline {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].account.as_str(), sent[0].cents), ("alice", 2_000));
    assert!(sent[0].trace_id.is_some(), "{sent:?}");
    bed.stop().await;
}

#[tokio::test]
async fn a_call_past_its_timeout_fails_cleanly_and_moves_no_money() {
    let mut bed = bed("timeout").await;
    // The limits service takes 2 s: a withdrawal given 300 ms cannot finish.
    let outbox = serve(&mut bed, Duration::from_secs(2)).await;
    let patient = Front::new(bed.client(), Duration::from_secs(10));
    patient.accounts().open("dave".into()).await.unwrap();
    patient
        .accounts()
        .deposit("dave".into(), 1_000)
        .await
        .unwrap();

    let hasty = Front::new(bed.client(), Duration::from_millis(300));
    let started = Instant::now();
    match hasty.accounts().withdraw("dave".into(), 500).await {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The bank's own call to the limits service inherited the 300 ms and gave up with it:
    // nothing was withdrawn, no notification sent (give a late withdrawal time to show up).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        patient.accounts().get_balance("dave".into()).await.unwrap(),
        1_000
    );
    assert!(outbox.sent().is_empty());
    bed.stop().await;
}
