//! The test harness shared by every integration test in `tests/`.
//!
//! Each test gets a broker from [`broker`]: by default a bundled broker started in-process on
//! `127.0.0.1:0` (stopped by [`TestBroker::stop`] or when the test's runtime ends), or, when
//! `LEPUS_TEST_AMQP_URL` is set, the external broker at that URL (`.ci/run` points it at the
//! RabbitMQ it starts, so the same suite checks our semantics against the reference).
//!
//! Tests that share an external broker must not collide: name every queue and exchange with
//! [`unique`].
#![allow(dead_code, unreachable_pub)]

use lepus::broker::{Broker, BrokerHandle};

pub mod background;
pub mod queued;
pub mod served;

// One definition of `free_port` for both test suites (the broker crate's and this one).
#[path = "../../broker/tests/common/ports.rs"]
pub mod ports;

/// The environment variable that points the suite at an external broker.
pub const EXTERNAL_URL_VAR: &str = "LEPUS_TEST_AMQP_URL";

/// A broker for one test: in-process, or the external one named by `LEPUS_TEST_AMQP_URL`.
pub struct TestBroker {
    url: String,
    /// The in-process broker, or `None` for an external one (which we never stop).
    handle: Option<BrokerHandle>,
}

impl TestBroker {
    /// The AMQP URL to connect to (credentials and vhost included).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when the broker is our in-process one; false for RabbitMQ (or any external broker).
    pub fn is_bundled(&self) -> bool {
        self.handle.is_some()
    }

    /// The in-process broker's handle (`None` against an external broker).
    pub fn handle(&self) -> Option<&BrokerHandle> {
        self.handle.as_ref()
    }

    /// Shuts the in-process broker down gracefully; a no-op for an external broker.
    pub async fn stop(self) {
        if let Some(handle) = self.handle {
            handle.shutdown().await;
        }
    }
}

/// Starts a bundled broker on `127.0.0.1:0`, or returns the external one from the environment.
pub async fn broker() -> TestBroker {
    init_tracing();
    if let Ok(url) = std::env::var(EXTERNAL_URL_VAR) {
        return TestBroker { url, handle: None };
    }
    bundled_broker(|builder| builder).await
}

/// Starts a bundled broker on `127.0.0.1:0` set up by `configure`, whatever
/// `LEPUS_TEST_AMQP_URL` says: for tests of the bundled broker's own options and lifecycle.
pub async fn bundled_broker(
    configure: impl FnOnce(lepus::broker::BrokerBuilder) -> lepus::broker::BrokerBuilder,
) -> TestBroker {
    init_tracing();
    let handle = configure(Broker::builder().listen("127.0.0.1:0"))
        .start()
        .await
        .expect("the in-process broker starts on 127.0.0.1:0");
    TestBroker {
        url: handle.amqp_url(),
        handle: Some(handle),
    }
}

/// A `lepus::testing::TestBed` on the bundled broker, or on the external one of
/// `LEPUS_TEST_AMQP_URL` with a unique prefix made of `name`.
pub async fn test_bed(name: &str) -> lepus::testing::TestBed {
    init_tracing();
    match std::env::var(EXTERNAL_URL_VAR) {
        Ok(url) => lepus::testing::TestBed::external(&url, &unique(name))
            .await
            .expect("a test bed on the external broker"),
        Err(_) => lepus::testing::TestBed::start()
            .await
            .expect("a test bed on the bundled broker"),
    }
}

/// A name no other test (nor an earlier run against the same external broker) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Sends `tracing` output to the test's captured output; `RUST_LOG` picks the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A data directory for one test: a path inside a fresh `tempfile` directory, not created
/// itself (the broker creates it), removed with that directory when dropped.
pub struct DataDir {
    /// Owns the directory; dropping it removes everything below.
    _root: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl DataDir {
    /// A fresh, empty path for `name`.
    pub fn new(name: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix(&format!("lepus-{name}-"))
            .tempdir()
            .expect("a temporary directory");
        let path = root.path().join("data");
        Self { _root: root, path }
    }

    /// The data directory's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Reads `stdout` of a child broker until the line starting with `prefix` (its "listening"
/// announcement) and returns the rest of that line; panics if the child ends first. The rest of
/// the child's output is read (and dropped) by a thread until the child exits, so the child
/// never writes to a closed pipe (libtest's "has been running for over 60 seconds" would make
/// a child test process exit with a broken pipe).
pub fn announced(stdout: std::process::ChildStdout, prefix: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("the child broker announces its address")
            .expect("read the child's stdout");
        if let Some(rest) = line.strip_prefix(prefix) {
            std::thread::spawn(move || lines.for_each(drop));
            return rest.to_owned();
        }
    }
}

/// A command that runs this test executable again, running only the ignored test `test`:
/// the way a test puts a broker in a child process it can kill.
pub fn test_child(test: &str) -> std::process::Command {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut command = std::process::Command::new(exe);
    command.args(["--ignored", "--exact", test, "--nocapture"]);
    command
}

/// The body of a child-process test (see [`test_child`]): when its parent set `var` to
/// `"<broker url> <arg>..."`, connects to the broker and runs `body` with the connection and
/// the `N` arguments after the URL (space-separated; an empty one stays) on [`child_runtime`].
/// When `var` is unset (the ignored test run on its own), does nothing.
pub fn run_child<const N: usize, Fut>(
    var: &str,
    body: impl FnOnce(lepus::Connection, [String; N]) -> Fut,
) where
    Fut: std::future::Future<Output = ()>,
{
    let Ok(spec) = std::env::var(var) else {
        return;
    };
    let mut args = spec.split(' ').map(str::to_owned);
    let url = args.next().unwrap_or_default();
    let args: [String; N] = args
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|args| panic!("{var}: expected a URL and {N} arguments, got {args:?}"));
    child_runtime().block_on(async move {
        let conn = lepus::connect(&url).await.expect("the child connects");
        body(conn, args).await;
    });
}

/// The runtime a child-process test (see [`test_child`]) runs its body on: multi-threaded,
/// two workers, all drivers enabled.
pub fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the child's tokio runtime")
}

/// Spawns `command` (a child broker, `RUST_LOG=warn`) and returns it with the rest of its
/// stdout line that starts with `announce` (see [`announced`]).
pub fn spawn_announcing(
    mut command: std::process::Command,
    announce: &str,
) -> (std::process::Child, String) {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child broker");
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let rest = announced(stdout, announce);
    (child, rest)
}

/// A small deterministic generator (xorshift64*), so that a failing seed replays.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `len` random lowercase letters.
    pub fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}
