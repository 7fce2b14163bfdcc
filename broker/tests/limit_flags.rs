//! The `lepus-broker` binary's limit flags reach the broker: `--channel-max` and `--frame-max`
//! are what lapin negotiates, `--max-message-size` closes the publishing channel with 406,
//! `--consumer-max-per-channel` closes the connection with 530, `--handshake-timeout` drops a
//! silent client; `--busy-poll-us` polls only while traffic flows.
//!
//! This suite lives in the `lepus-broker` package because Cargo only exposes a binary's path
//! (`CARGO_BIN_EXE_lepus-broker`) to tests of the same package. The broker listens on
//! 127.0.0.1 port 0 and is killed when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ErrorKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The `lepus-broker` binary on 127.0.0.1 port 0 with `flags`, its own data directory (named
/// after `name`), no management listener; killed when dropped.
struct BrokerProcess {
    child: tokio::process::Child,
    data_dir: std::path::PathBuf,
    /// `ADDR:PORT` from the listening line.
    addr: String,
}

impl BrokerProcess {
    async fn start(name: &str, flags: &[&str]) -> Self {
        let data_dir = std::env::temp_dir().join(format!("lepus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lepus-broker"))
            .args(["--listen", "127.0.0.1:0", "--management-listen", ""])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start lepus-broker");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = within("the listening line", lines.next_line())
            .await
            .unwrap()
            .expect("a line on stdout");
        let addr = line
            .strip_prefix("lepus-broker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        BrokerProcess {
            child,
            data_dir,
            addr,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("stop the broker");
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

#[tokio::test]
async fn limit_flags_reach_the_broker() {
    let broker = BrokerProcess::start(
        "limit-flags",
        &[
            "--channel-max",
            "3",
            "--frame-max",
            "8192",
            "--handshake-timeout",
            "300",
            "--max-message-size",
            "100",
            "--consumer-max-per-channel",
            "1",
        ],
    )
    .await;
    let url = broker.url();
    let addr = broker.addr.clone();

    let conn = within(
        "the connection",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connect");
    assert_eq!(conn.configuration().channel_max(), 3);
    assert_eq!(conn.configuration().frame_max(), 8192);

    // --max-message-size 100: 100 bytes pass, 101 close the channel with 406.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let q = common::amqp::declare_exclusive(&ch).await;
    let publish = |len: usize| {
        let ch = ch.clone();
        let key = q.name().clone();
        async move {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    key,
                    BasicPublishOptions::default(),
                    &vec![b'x'; len],
                    BasicProperties::default(),
                )
                .await?;
            within("the confirm", confirm).await
        }
    };
    publish(100).await.expect("100 bytes are within the limit");
    let err = publish(101)
        .await
        .expect_err("101 bytes are over the limit");
    assert_eq!(reply_code(&err), Some(406), "{err}");
    assert!(
        err.to_string()
            .contains("message size 101 is larger than configured max size 100"),
        "{err}"
    );

    // --consumer-max-per-channel 1: a second consumer on one channel closes the connection.
    let ch = conn.create_channel().await.unwrap();
    let _first = common::amqp::consume_tagged(&ch, q.name().as_str(), "one", false).await;
    let err = within(
        "the second consume",
        ch.basic_consume(
            q.name().clone(),
            "two".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect_err("over the per-channel consumer limit");
    assert_eq!(reply_code(&err), Some(530), "{err}");

    // --handshake-timeout 300: a client that sends nothing is dropped long before the 10 s
    // default would drop it.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut scratch = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut scratch))
        .await
        .expect("the broker drops the silent client within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    broker.stop().await;
}

/// CPU seconds (user + system) the process has used, from `/proc/PID/stat` (clock ticks of
/// 1/100 s, the Linux default `USER_HZ`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / 100.0
}

/// `--busy-poll-us`: the broker polls its sockets for the window after traffic, then its
/// spinner parks: an idle broker uses (almost) no CPU even with a window of 200 ms, and a
/// client keeps working through the spinning and parked phases.
#[tokio::test]
async fn busy_polling_stops_when_traffic_stops() {
    let broker = BrokerProcess::start("busy-poll", &["--busy-poll-us", "200000"]).await;
    let pid = broker.child.id().unwrap();
    let url = broker.url();

    let conn = within(
        "the connection",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.unwrap();
    for round in 0..3 {
        // Traffic (each call is a read by the broker, which starts a 200 ms window)...
        let q = common::amqp::declare_exclusive(&ch).await;
        common::amqp::publish_to_queue(&ch, q.name().as_str(), b"ping").await;
        // ...then silence: once the window has passed the spinner parks, and the broker's
        // CPU time stays nearly flat (a broker that kept spinning would use ~1 s per second).
        tokio::time::sleep(Duration::from_millis(600)).await;
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_seconds(pid) - before;
        assert!(
            used < 0.25,
            "round {round}: the idle broker used {used:.2} s of CPU in 1 s"
        );
    }
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}
