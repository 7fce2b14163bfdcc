//! The web dashboard in a real browser (issue 20, "Done means" 1): Debian's Chromium, headless,
//! driven through chromedriver (WebDriver, the `fantoccini` crate), against an in-process
//! broker with real AMQP traffic.
//!
//! One session walks what an operator does: log in; watch a queue's message count and rate
//! move while a publisher runs; purge it; publish a message from its page and get it back;
//! close a client's connection; create a user tagged `monitoring` (with read-only permissions)
//! and check, logged in as that user, that deleting a queue is refused and the queue stays.
//! Then every main page is loaded at 1280 and 390 px wide, checked for page errors and for
//! horizontal overflow at phone width, and saved as a PNG screenshot.
//!
//! Runs when `LEPUS_TEST_CHROMEDRIVER` names chromedriver (`.ci/run` installs Debian's
//! `chromium` and `chromium-driver` and sets it); `LEPUS_TEST_CHROMIUM` names the browser
//! (default `/usr/bin/chromium`); screenshots go to `LEPUS_DASHBOARD_SCREENSHOTS` (default
//! `target/dashboard-screenshots`). Without chromedriver the test says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus_broker::Broker;
use serde_json::{json, Value};

mod common;
use common::http::Api;
use common::ports::free_port;

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(path: &str) -> Driver {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    for _ in 0..100 {
        let s = status.clone();
        let ready = tokio::task::spawn_blocking(move || ureq::get(&s).call().is_ok())
            .await
            .unwrap();
        if ready {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

/// A headless Chromium session with the flags this machine needs (no network but loopback).
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium =
        std::env::var("LEPUS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Runs `js` (an expression) in the page.
async fn eval(c: &Client, js: &str) -> Value {
    c.execute(&format!("return ({js});"), vec![]).await.unwrap()
}

/// Waits until the JS expression `js` is truthy (20 s, or `secs`).
async fn until(c: &Client, what: &str, js: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = eval(c, js).await;
        if v.as_bool() == Some(true) {
            return;
        }
        if Instant::now() > deadline {
            let flash = eval(c, "document.querySelector('#flash').textContent").await;
            let errors = eval(c, "window.lepusErrors").await;
            panic!("timed out waiting for {what} ({js}); flash: {flash}; page errors: {errors}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn css(s: &str) -> Locator<'_> {
    Locator::Css(s)
}

async fn click(c: &Client, selector: &str) {
    c.wait()
        .for_element(css(selector))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, selector: &str, text: &str) {
    let e = c.wait().for_element(css(selector)).await.unwrap();
    e.clear().await.unwrap();
    if !text.is_empty() {
        e.send_keys(text).await.unwrap();
    }
}

/// The number shown in an element (`1,234`, `12.5/s`).
async fn number(c: &Client, selector: &str) -> f64 {
    let text = c.find(css(selector)).await.unwrap().text().await.unwrap();
    let digits: String = text
        .chars()
        .take_while(|ch| ch.is_ascii_digit() || *ch == ',' || *ch == '.')
        .filter(|ch| *ch != ',')
        .collect();
    digits.parse().unwrap_or(f64::NAN)
}

async fn log_in(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/#/")).await.unwrap();
    type_into(c, "#login-user", user).await;
    type_into(c, "#login-pass", password).await;
    click(c, "[data-test=login]").await;
    until(
        c,
        "the logged-in user",
        &format!("document.querySelector('[data-test=who]').textContent.startsWith('{user}')"),
        20,
    )
    .await;
}

/// Confirms the in-page dialog.
async fn confirm(c: &Client) {
    until(
        c,
        "the confirmation dialog",
        "document.querySelector('#confirm').open",
        10,
    )
    .await;
    click(c, "[data-test=confirm]").await;
}

async fn flash_says(c: &Client, text: &str) {
    until(
        c,
        text,
        &format!(
            "!document.querySelector('#flash').hidden && document.querySelector('#flash').textContent.includes({})",
            json!(text)
        ),
        20,
    )
    .await;
}

/// Sets the viewport to `width` CSS pixels (the window's frame, if any, accounted for).
async fn viewport(c: &Client, width: u32, height: u32) {
    c.set_window_size(width, height).await.unwrap();
    let inner = eval(c, "window.innerWidth").await.as_u64().unwrap() as u32;
    if inner != width {
        c.set_window_size(width + (width - inner.min(width)), height)
            .await
            .unwrap();
    }
    until(
        c,
        "the viewport width",
        &format!("window.innerWidth === {width}"),
        5,
    )
    .await;
}

/// Grows the window until the viewport shows the whole document (up to 4000 px tall), so a
/// screenshot holds the whole page. The window is taller than its viewport by the browser's
/// frame (about 140 px in headless Chromium), so the window is sized from the viewport's
/// shortfall, not from the document's height.
async fn whole_page_in_view(c: &Client, width: u32, height: u32) {
    for _ in 0..6 {
        let document = eval(c, "document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap()
            .clamp(u64::from(height), 4000);
        let inner = eval(c, "window.innerHeight").await.as_u64().unwrap();
        if inner >= document {
            return;
        }
        let (_, window) = c.get_window_size().await.unwrap();
        c.set_window_size(width, (window + document - inner) as u32)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A publisher sending one persistent message every 20 ms until stopped.
fn publisher(
    url: String,
    queue: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let period = Duration::from_millis(20);
    common::amqp::publish_until_stopped(url, queue, b"tick", persistent, period, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_broker_from_the_dashboard() {
    let Ok(chromedriver) = std::env::var("LEPUS_TEST_CHROMEDRIVER") else {
        eprintln!("LEPUS_TEST_CHROMEDRIVER unset: the browser test is skipped");
        return;
    };
    let shots = PathBuf::from(
        std::env::var("LEPUS_DASHBOARD_SCREENSHOTS").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/dashboard-screenshots"
            )
            .into()
        }),
    );
    std::fs::create_dir_all(&shots).unwrap();
    let tmp = std::env::temp_dir().join(format!("lepus-dashboard-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .management_listen("127.0.0.1:0")
        .data_dir(tmp.join("data"))
        .start()
        .await
        .unwrap();
    let base = format!("http://{}", broker.management_addr().unwrap());
    let api = Api::new(&base, "guest", "guest");
    let amqp = broker.amqp_url();
    api.ok(
        "PUT",
        "/api/queues/%2F/orders",
        Some(json!({"durable": true, "arguments": {"x-max-length": 100000}})),
    )
    .await;
    api.ok(
        "PUT",
        "/api/queues/%2F/keep-me",
        Some(json!({"durable": true})),
    )
    .await;
    api.ok(
        "PUT",
        "/api/exchanges/%2F/events",
        Some(json!({"type": "topic", "durable": true})),
    )
    .await;
    api.ok(
        "POST",
        "/api/bindings/%2F/e/events/q/orders",
        Some(json!({"routing_key": "orders.#"})),
    )
    .await;

    let driver = start_driver(&chromedriver).await;
    let c = browser(&driver, &tmp.join("profile")).await;

    // Log in.
    log_in(&c, &base, "guest", "guest").await;

    // A queue's count and rate move while a publisher runs.
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = publisher(amqp.clone(), "orders", stop.clone());
    c.goto(&format!("{base}/#/queues/%2F/orders"))
        .await
        .unwrap();
    until(
        &c,
        "the queue page",
        "!!document.querySelector('[data-test=queue-messages]')",
        20,
    )
    .await;
    let first = number(&c, "[data-test=queue-messages]").await;
    until(
        &c,
        "a publish rate above zero",
        "parseFloat(document.querySelector('[data-test=queue-publish-rate]').textContent) > 0",
        40,
    )
    .await;
    until(
        &c,
        "the count to grow",
        &format!(
            "parseInt(document.querySelector('[data-test=queue-messages]').textContent.replace(/,/g, '')) >= {}",
            first + 50.0
        ),
        30,
    )
    .await;
    let rate = number(&c, "[data-test=queue-publish-rate]").await;
    assert!(rate > 5.0 && rate < 200.0, "rate shown {rate}/s for ~50/s");
    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();

    // Purge it.
    click(&c, "[data-test=purge]").await;
    confirm(&c).await;
    flash_says(&c, "Queue purged.").await;
    until(
        &c,
        "an empty queue",
        "document.querySelector('[data-test=queue-ready]').textContent === '0'",
        10,
    )
    .await;
    assert_eq!(api.get("/api/queues/%2F/orders").await["messages_ready"], 0);

    // Publish a message from its page and get it back.
    type_into(&c, "[data-test=publish-payload]", "hello from the browser").await;
    click(&c, "[data-test=publish]").await;
    flash_says(&c, "Message published.").await;
    click(&c, "[data-test=get]").await;
    until(
        &c,
        "the message got",
        "[...document.querySelectorAll('[data-test=message-payload]')].some(e => e.textContent === 'hello from the browser')",
        10,
    )
    .await;
    // The default mode requeues: the message is still there.
    assert_eq!(api.get("/api/queues/%2F/orders").await["messages_ready"], 1);

    // Close a client's connection.
    api.add_user("client-app", "client-pw", "", [".*", ".*", ".*"])
        .await;
    let victim = Connection::connect(
        &format!("amqp://client-app:client-pw@{}/%2f", broker.local_addr()),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    c.goto(&format!("{base}/#/connections")).await.unwrap();
    click(&c, "[data-test=close-connection][data-user=client-app]").await;
    confirm(&c).await;
    flash_says(&c, "Connection closed.").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while victim.status().connected() {
        assert!(Instant::now() < deadline, "the client was not disconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let conns = api.get("/api/connections").await;
    assert!(conns
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["user"] != "client-app"));

    // Create a monitoring user with read-only permissions on `/`.
    c.goto(&format!("{base}/#/admin")).await.unwrap();
    click(&c, "[data-test=user-form] summary").await;
    type_into(&c, "#new-user-name", "watcher").await;
    type_into(&c, "#new-user-pass", "watcher-pw").await;
    click(&c, "input[data-tag=monitoring]").await;
    click(&c, "[data-test=add-user]").await;
    flash_says(&c, "User saved.").await;
    click(&c, "[data-test=permission-form] summary").await;
    until(
        &c,
        "watcher in the user list",
        "[...document.querySelectorAll('[data-test=perm-user] option')].some(o => o.value === 'watcher')",
        10,
    )
    .await;
    c.find(css("[data-test=perm-user]"))
        .await
        .unwrap()
        .select_by_value("watcher")
        .await
        .unwrap();
    c.find(css("[data-test=perm-vhost]"))
        .await
        .unwrap()
        .select_by_value("/")
        .await
        .unwrap();
    type_into(&c, "[data-test=perm-configure]", "").await;
    type_into(&c, "[data-test=perm-write]", "").await;
    type_into(&c, "[data-test=perm-read]", ".*").await;
    click(&c, "[data-test=set-permission]").await;
    flash_says(&c, "Permissions set.").await;
    let u = api.get("/api/users/watcher").await;
    assert_eq!(u["tags"], json!(["monitoring"]));
    let p = api.get("/api/permissions/%2F/watcher").await;
    assert_eq!(
        (p["configure"].as_str(), p["read"].as_str()),
        (Some(""), Some(".*"))
    );

    // Logged in as that user: no admin page, and deleting a queue is refused.
    click(&c, "[data-test=logout]").await;
    log_in(&c, &base, "watcher", "watcher-pw").await;
    assert_eq!(
        eval(&c, "!!document.querySelector('[data-nav=admin]')").await,
        json!(false)
    );
    c.goto(&format!("{base}/#/queues/%2F/keep-me"))
        .await
        .unwrap();
    click(&c, "[data-test=delete-queue]").await;
    confirm(&c).await;
    flash_says(&c, "403").await;
    assert_eq!(api.get("/api/queues/%2F/keep-me").await["name"], "keep-me");
    click(&c, "[data-test=logout]").await;

    // Screenshots of every main page at a laptop's and a phone's width, with traffic flowing
    // (a publisher and a consumer) so the charts have something to show.
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = publisher(amqp.clone(), "orders", stop.clone());
    let consumer_conn = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let cch = consumer_conn.create_channel().await.unwrap();
    cch.queue_declare(
        "orders".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        {
            let mut t = FieldTable::default();
            t.insert(
                "x-max-length".into(),
                lapin::types::AMQPValue::LongLongInt(100_000),
            );
            t
        },
    )
    .await
    .unwrap();
    let _consumer = common::amqp::consume_no_ack(&cch, "orders", "dashboard-shots").await;
    c.goto(&format!("{base}/#/")).await.unwrap();
    viewport(&c, 1280, 900).await;
    c.screenshot().await.unwrap();
    let login_png = c.screenshot().await.unwrap();
    std::fs::write(shots.join("login-1280.png"), login_png).unwrap();
    log_in(&c, &base, "guest", "guest").await;
    // Three samples or more for the charts.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let pages = [
        ("overview", "#/", "[data-test=publish-rate]"),
        ("queues", "#/queues", "[data-queue=orders]"),
        ("queue", "#/queues/%2F/orders", "[data-test=queue-messages]"),
        ("exchanges", "#/exchanges", "table"),
        ("exchange", "#/exchanges/%2F/events", "table"),
        (
            "connections",
            "#/connections",
            "[data-test=close-connection]",
        ),
        ("channels", "#/channels", "table"),
        ("admin", "#/admin", "[data-user=watcher]"),
    ];
    for (width, height) in [(1280u32, 900u32), (390, 844)] {
        viewport(&c, width, height).await;
        for (name, hash, ready) in pages {
            c.goto(&format!("{base}/{hash}")).await.unwrap();
            until(
                &c,
                name,
                &format!("!!document.querySelector({})", json!(ready)),
                20,
            )
            .await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(
                eval(&c, "window.lepusErrors.length").await,
                json!(0),
                "{name}"
            );
            // At a phone's width nothing sticks out sideways: wide tables scroll inside
            // their own box.
            let overflow = eval(
                &c,
                "document.documentElement.scrollWidth - document.documentElement.clientWidth",
            )
            .await;
            assert_eq!(
                overflow,
                json!(0),
                "{name} at {width}px overflows by {overflow}px"
            );
            whole_page_in_view(&c, width, height).await;
            let png = c.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{name}");
            std::fs::write(shots.join(format!("{name}-{width}.png")), png).unwrap();
            c.set_window_size(width, height).await.unwrap();
        }
    }
    click(&c, "[data-test=logout]").await;
    let login_png = c.screenshot().await.unwrap();
    std::fs::write(shots.join("login-390.png"), login_png).unwrap();
    eprintln!("screenshots in {}", shots.display());

    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();
    c.close().await.unwrap();
    drop(driver);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);
}
