//! Issue 14, item 2: no payload bytes in the logs, and no WARN or ERROR on the normal paths.
//!
//! One test (its own binary, so that the global subscriber it installs sees this run only)
//! captures every `tracing` event of every crate at every level (the bundled broker runs
//! in-process, so its logs are in too) and every `log` record (rustls logs through `log`),
//! while it exercises the normal paths a service goes through: a call nobody serves (NoRoute),
//! waiting for consumers on a cold start, the first enqueue to a queue that does not exist yet,
//! calls served, a call after the last worker stopped, a task retried then dead-lettered, an
//! event. Every payload carries a marker; the marker must appear in no log line, neither as
//! text nor as the bytes lapin's `Debug` prints, and no line may be WARN or ERROR.
//!
//! The one exclusion is lapin's own TRACE output: at that level lapin dumps every frame it
//! handles, payloads included, by design (a wire-level debugging aid nobody runs by default).
//! A last step proves the check can fail: it makes lapin log a returned message (what a
//! `mandatory` publish nobody takes produces), and the capture must catch its payload.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lepus::testing::Outcome;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The secret every payload carries.
const SECRET: &str = "tok-SECRET-123";

/// One captured event.
#[derive(Debug, Clone)]
struct Line {
    level: Level,
    target: String,
    text: String,
}

/// Records every event, with all its fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl Capture {
    fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Line {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text: fields.0,
        });
    }
}

/// The payload marker as text, and as the decimal bytes `Debug` prints for a `Vec<u8>`.
fn leaks(line: &Line) -> bool {
    let bytes = format!("{:?}", SECRET.as_bytes());
    let bytes = bytes.trim_start_matches('[').trim_end_matches(']');
    line.text.contains(SECRET) || line.text.contains(bytes)
}

/// lapin's TRACE frame dumps (see the module documentation).
fn lapin_trace(line: &Line) -> bool {
    line.level == Level::TRACE && line.target.starts_with("lapin")
}

#[lepus::rpc(queue = "quiet.accounts")]
async fn login(user: String, token: String) -> Result<String, String> {
    if token.is_empty() {
        return Err("no token".into());
    }
    Ok(format!("welcome {user}"))
}

#[lepus::task(queue = "quiet.emails", retries = 1, backoff = "10ms..10ms")]
async fn send_welcome(to: String, token: String) -> anyhow::Result<()> {
    let _ = (&to, &token);
    if to.ends_with("@bounce.example") {
        anyhow::bail!("mailbox unavailable");
    }
    Ok(())
}

#[lepus::event(exchange = "quiet.signups", kind = "fanout", delivery = "broadcast")]
async fn on_signup(token: String) {
    let _ = token;
}

#[tokio::test]
async fn normal_paths_log_no_payload_and_no_warning() {
    let capture = Capture::default();
    tracing_subscriber::registry()
        .with(capture.clone())
        .try_init()
        .expect("the only subscriber of this test binary");
    let mut bed = common::test_bed("quiet").await;
    let client = bed.client().clone();
    let wait = Duration::from_secs(20);

    // NoRoute: nobody serves the queue yet.
    match login::call(&client, "ann".into(), SECRET.into()).await {
        Err(lepus::Error::NoRoute { .. }) => {}
        other => panic!("expected NoRoute, got {other:?}"),
    }

    // Cold start: wait for the consumers of a task queue nobody declared yet, while a worker
    // starts; then the first enqueue to a queue that did not exist before this run.
    let handler =
        send_welcome::handler().on_queue(format!("{}{}", bed.prefix(), send_welcome::QUEUE));
    let waiting = {
        let conn = bed.conn().clone();
        tokio::spawn(async move {
            lepus::task::wait_for_consumers(&conn, &handler, 1, Duration::from_secs(20)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first_enqueue = send_welcome::enqueue(&client, "ann@example.com".into(), SECRET.into())
        .await
        .unwrap();
    let mut emails = bed.serve(send_welcome::handler()).await.unwrap();
    waiting.await.unwrap().unwrap();
    let done = emails.next_within(wait).await.unwrap();
    assert_eq!(done.message_id.as_deref(), Some(first_enqueue.0.as_str()));
    assert_eq!(done.outcome, Outcome::Succeeded);

    // Retries and a dead letter.
    send_welcome::enqueue(&client, "bob@bounce.example".into(), SECRET.into())
        .await
        .unwrap();
    let seen = emails
        .wait_until(wait, |c| matches!(c.outcome, Outcome::DeadLettered { .. }))
        .await
        .unwrap();
    assert_eq!(seen.len(), 2, "one retry, then the dead letter: {seen:?}");

    // Calls served, an application error, then the last worker stops: NoRoute again.
    let mut logins = bed.serve(login::handler()).await.unwrap();
    assert_eq!(
        login::call(&client, "ann".into(), SECRET.into())
            .await
            .unwrap(),
        "welcome ann"
    );
    assert!(matches!(
        login::call(&client, SECRET.into(), String::new()).await,
        Err(lepus::Error::Remote(_))
    ));
    logins.wait_for(2, wait).await.unwrap();

    // An event.
    let mut signups = bed.serve(on_signup::handler()).await.unwrap();
    on_signup::publish(&client, "", &SECRET.to_owned())
        .await
        .unwrap();
    assert_eq!(
        signups.next_within(wait).await.unwrap().outcome,
        Outcome::Succeeded
    );

    bed.stop().await;
    let lines = capture.lines();
    assert!(
        lines.iter().any(|l| l.target.starts_with("lepus")),
        "the capture sees the runtime's logs"
    );
    let loud: Vec<_> = lines.iter().filter(|l| l.level <= Level::WARN).collect();
    assert!(loud.is_empty(), "WARN or ERROR on a normal path: {loud:#?}");
    let leaked: Vec<_> = lines
        .iter()
        .filter(|l| !lapin_trace(l) && leaks(l))
        .collect();
    assert!(leaked.is_empty(), "payload bytes in the logs: {leaked:#?}");

    // The check can fail: what lapin logs for a returned message is caught.
    let before = capture.lines().len();
    let broker = common::broker().await;
    let conn = lapin::Connection::connect(broker.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let body = lepus::envelope::encode_request(&(SECRET,)).unwrap();
    channel
        .basic_publish(
            "".into(),
            common::unique("nobody").as_str().into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &body,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    let mut caught = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        caught = capture.lines()[before..]
            .iter()
            .any(|l| l.level == Level::WARN && leaks(l));
        if caught {
            break;
        }
    }
    assert!(
        caught,
        "the capture catches lapin's returned-message WARN and its payload"
    );
    let _ = conn.close(200, "bye".into()).await;
    broker.stop().await;
}
