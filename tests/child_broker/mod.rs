//! A broker in a child process, for the tests that watch its memory from outside
//! (`broker_backlog`, `broker_memory_watermark`): the broker binary when there is one at hand
//! (`LEPUS_BROKER_BIN`, else the release build), otherwise the test executable itself re-run
//! as an in-process broker (an ignored `#[test]` of the calling file that calls
//! [`serve_in_process`]). Killed when dropped, so a failing test leaves nothing running.

// Each test file uses part of it; `pub` items are reached from those files only.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common;

/// The child broker; killed when dropped.
pub struct BrokerProcess {
    /// The child; its pid is what `/proc` is read for.
    pub child: Child,
    /// `host:port` of its AMQP listener.
    pub addr: String,
    /// What runs: the binary's path, or the in-process fallback.
    pub what: String,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker binary to run: `LEPUS_BROKER_BIN`, else the release build when `release_ok`.
pub fn broker_binary(release_ok: bool) -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("LEPUS_BROKER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/lepus-broker");
    (release_ok && release.exists()).then_some(release)
}

/// Starts the broker: the binary (see [`broker_binary`]) with `--listen=127.0.0.1:0`, no
/// management listener and `args`; else the ignored test `child_test` of this executable with
/// `child_env` set (name, value), which must call [`serve_in_process`].
pub fn spawn(
    release_ok: bool,
    args: &[String],
    child_test: &str,
    child_env: (&str, String),
    stderr: Stdio,
) -> BrokerProcess {
    let (mut command, what) = match broker_binary(release_ok) {
        Some(bin) => {
            let mut command = Command::new(&bin);
            command
                .arg("--listen=127.0.0.1:0")
                .args(args)
                .arg("--management-listen=");
            (command, bin.display().to_string())
        }
        None => {
            let mut command = common::test_child(child_test);
            command.env(child_env.0, child_env.1);
            (
                command,
                "this test executable (in-process broker)".to_owned(),
            )
        }
    };
    command.stderr(stderr);
    let (child, addr) = common::spawn_announcing(command, "lepus-broker listening on ");
    BrokerProcess { child, addr, what }
}

/// The body of the child test: when the environment variable `env` is set (the parent sets
/// it), starts the builder `configure` makes of its value on 127.0.0.1:0, announces its
/// address as the binary does, and serves until killed. Without `env` (an ordinary test
/// run) it returns at once.
pub fn serve_in_process(env: &str, configure: impl FnOnce(String) -> lepus::broker::BrokerBuilder) {
    let Ok(spec) = std::env::var(env) else {
        return;
    };
    let builder = configure(spec);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let broker = builder.listen("127.0.0.1:0").start().await.unwrap();
        println!("lepus-broker listening on {}", broker.local_addr());
        std::future::pending::<()>().await;
    });
}

/// A `/proc/PID/status` field in bytes (`VmRSS:`, `VmHWM:`); `None` once the process is gone.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
