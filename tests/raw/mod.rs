//! A hand-driven AMQP 0-9-1 client over a bare `TcpStream`, for the raw-socket suites
//! (`tests/broker_raw_*.rs`) that send what no real client would.
//!
//! Valid frames are built with `amq-protocol` (the codec lapin uses) and malformed ones by
//! hand, from the frame layout of AMQP 0-9-1 §4.2.3:
//!
//! ```text
//! 0      1         3         7                  7+size     8+size
//! +------+---------+---------+-------------------+----------+
//! | type | channel |  size   |  payload (size)   | 0xCE end |
//! +------+---------+---------+-------------------+----------+
//!   u8     u16 BE    u32 BE
//! ```
//!
//! Server frames are read by that layout (so a bad frame from the server is a test failure, not
//! a hang) and decoded with `amq_protocol::frame::parse_frame`.
//!
//! [`Bystander`] is the well-behaved lapin client that keeps publishing and consuming on its own
//! connection while a raw test misbehaves, to show one client cannot disturb another.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::TestBroker;

/// The longest a raw test waits for any single reply from the broker.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The AMQP 0-9-1 protocol header, which a broker sends back when it refuses another version.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The frame-end octet.
pub const FRAME_END: u8 = 0xCE;

/// `host:port` of the broker, taken from its AMQP URL (`amqp://user:pass@host:port/vhost`).
pub fn addr(broker: &TestBroker) -> String {
    let url = broker.url();
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let after_userinfo = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    let hostport = after_userinfo.split('/').next().unwrap_or(after_userinfo);
    if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    }
}

/// Serialises a valid frame with amq-protocol's generator.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("amq-protocol serialises a well-formed frame")
        .write
}

/// A method frame on `channel`.
pub fn method(channel: u16, class: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(channel, class))
}

/// A frame of any `frame_type` with `payload`, ending in `end` (normally [`FRAME_END`]).
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(end);
    out
}

/// `channel.open` on `channel`.
pub fn channel_open(channel: u16) -> Vec<u8> {
    method(
        channel,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
}

/// `connection.open` of `vhost`.
pub fn connection_open(vhost: &str) -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: vhost.into(),
        })),
    )
}

/// `basic.publish` to the default exchange with `routing_key`.
pub fn basic_publish(channel: u16, routing_key: &str) -> Vec<u8> {
    method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

/// `connection.start-ok` with `client_properties`, `mechanism` and `response`.
pub fn start_ok(client_properties: FieldTable, mechanism: &str, response: &[u8]) -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties,
            mechanism: mechanism.into(),
            response: LongString::from(response.to_vec()),
            locale: "en_US".into(),
        })),
    )
}

/// An AMQPLAIN response as pika sends it: the field-table entries `LOGIN` S `login` and
/// `PASSWORD` S `password`, without the table's size (byte layout: a short-string key, `S`,
/// a u32 BE length, the value; for each entry).
pub fn amqplain(login: &str, password: &str) -> Vec<u8> {
    let mut response = Vec::new();
    for (key, value) in [("LOGIN", login), ("PASSWORD", password)] {
        response.push(key.len() as u8);
        response.extend_from_slice(key.as_bytes());
        response.push(b'S');
        response.extend_from_slice(&(value.len() as u32).to_be_bytes());
        response.extend_from_slice(value.as_bytes());
    }
    response
}

/// Client properties announcing the `authentication_failure_close` capability: a broker
/// answers a refused login from such a client with connection.close 403 (and its reason)
/// instead of just closing the socket.
pub fn failure_close_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    caps.insert(
        "authentication_failure_close".into(),
        AMQPValue::Boolean(true),
    );
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

/// `connection.tune-ok`.
pub fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max,
            frame_max,
            heartbeat,
        })),
    )
}

/// A method frame on `channel` of a queue.declare (class 50, method 10) of an auto-delete
/// queue named "x": payload reserved u16, queue "x", flags 0x08 (auto-delete), empty
/// arguments table.
pub fn queue_declare_on(channel: u16) -> Vec<u8> {
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'x', 0x08];
    payload.extend_from_slice(&0u32.to_be_bytes());
    raw_frame(1, channel, &payload, FRAME_END)
}

/// A content header frame for a basic message of `body_size` bytes.
pub fn content_header(channel: u16, body_size: u64) -> Vec<u8> {
    encode(&AMQPFrame::Header(
        channel,
        amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size,
            properties: basic::AMQPProperties::default(),
        },
    ))
}

/// A `connection.close` as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The AMQP reply code.
    pub code: u16,
    /// The reply text.
    pub text: String,
    /// The class of the method that caused the close (0 if none).
    pub class_id: u16,
    /// The method that caused the close (0 if none).
    pub method_id: u16,
}

impl Close {
    /// Asserts the close's reply code and the class and method it names.
    pub fn assert_names(&self, code: u16, class_id: u16, method_id: u16) {
        assert_eq!(
            (self.code, self.class_id, self.method_id),
            (code, class_id, method_id),
            "{self:?}"
        );
    }
}

/// Reads from `stream` into `buf` until a whole frame parses (with amq-protocol's parser) and
/// returns it, leaving the bytes after it in `buf` for the next call. `None` when the broker
/// closed the socket (EOF or a read error) first; fails the test when neither a frame nor the
/// close comes within [`DEADLINE`].
pub async fn read_parsed_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<AMQPFrame> {
    loop {
        if let Ok((rest, frame)) = parse_frame(&buf[..]) {
            let used = buf.len() - rest.len();
            buf.drain(..used);
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no frame and no close within {DEADLINE:?}"))
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What the server did after the test's input.
// One value per frame read, matched at once: boxing the frame would only complicate the
// patterns in the tests.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// It sent this frame.
    Frame(AMQPFrame),
    /// It closed the socket.
    Eof,
}

/// One raw connection.
pub struct RawConn {
    stream: TcpStream,
    /// Server properties from connection.start, once the handshake has run.
    pub server_properties: Option<FieldTable>,
    /// The mechanisms and locales from connection.start.
    pub mechanisms: String,
    /// The locales from connection.start.
    pub locales: String,
    /// The server's connection.tune proposal.
    pub tune: Option<connection::Tune>,
}

impl RawConn {
    /// Opens a TCP connection and sends nothing.
    pub async fn connect(broker: &TestBroker) -> RawConn {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr(broker)))
            .await
            .expect("TCP connect within the deadline")
            .expect("TCP connect");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            server_properties: None,
            mechanisms: String::new(),
            locales: String::new(),
            tune: None,
        }
    }

    /// Connects, sends the protocol header and reads connection.start (see [`RawConn::start`]).
    pub async fn started(broker: &TestBroker) -> RawConn {
        let mut conn = RawConn::connect(broker).await;
        conn.start().await;
        conn
    }

    /// Connects and completes the handshake with `frame_max` and `heartbeat` in tune-ok.
    pub async fn open(broker: &TestBroker, frame_max: u32, heartbeat: u16) -> RawConn {
        let mut conn = RawConn::connect(broker).await;
        conn.handshake(frame_max, heartbeat).await;
        conn
    }

    /// Connects with frame_max 131,072 and no heartbeats, and opens channel 1: where most
    /// channel-level tests start.
    pub async fn with_channel_1(broker: &TestBroker) -> RawConn {
        let mut conn = RawConn::open(broker, 131_072, 0).await;
        conn.open_channel(1).await;
        conn
    }

    /// The socket itself, for reads the helpers do not cover.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// Writes `bytes`, tolerating a broker that already closed the socket.
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads exactly `n` bytes, or `None` at end of stream.
    pub async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        match tokio::time::timeout(DEADLINE, self.stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                None
            }
            Ok(Err(e)) => panic!("read from broker: {e}"),
            Err(_) => panic!("broker sent nothing for {DEADLINE:?}"),
        }
    }

    /// Reads everything until the server closes the socket, within `limit`.
    pub async fn read_to_eof(&mut self, limit: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let res = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            res.is_ok(),
            "broker did not close the socket within {limit:?}"
        );
        out
    }

    /// The next frame from the server, or EOF. Panics on a malformed server frame.
    pub async fn next(&mut self) -> Outcome {
        let Some(head) = self.read_exact(7).await else {
            return Outcome::Eof;
        };
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let Some(rest) = self.read_exact(size + 1).await else {
            panic!("broker closed the socket in the middle of a frame");
        };
        let mut whole = head;
        whole.extend_from_slice(&rest);
        match parse_frame(whole.as_slice()) {
            Ok((&[], frame)) => Outcome::Frame(frame),
            other => panic!("malformed frame from broker: {other:?} (bytes {whole:?})"),
        }
    }

    /// The next frame that is not a heartbeat, or EOF.
    pub async fn next_non_heartbeat(&mut self) -> Outcome {
        loop {
            match self.next().await {
                Outcome::Frame(AMQPFrame::Heartbeat) => continue,
                other => return other,
            }
        }
    }

    /// The next method frame; panics on anything else.
    pub async fn expect_method(&mut self) -> (u16, AMQPClass) {
        match self.next_non_heartbeat().await {
            Outcome::Frame(AMQPFrame::Method(ch, m)) => (ch, m),
            other => panic!("expected a method frame, got {other:?}"),
        }
    }

    /// Sends the protocol header and reads connection.start (recorded on `self`).
    pub async fn start(&mut self) {
        self.send(PROTOCOL_HEADER).await;
        match self.expect_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(start))) => {
                assert_eq!((start.version_major, start.version_minor), (0, 9));
                self.server_properties = Some(start.server_properties);
                self.mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into();
                self.locales = String::from_utf8_lossy(start.locales.as_bytes()).into();
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// Sends start-ok (PLAIN guest/guest) and reads connection.tune (recorded on `self`).
    pub async fn authenticate(&mut self) {
        self.send(&start_ok(FieldTable::default(), "PLAIN", b"\0guest\0guest"))
            .await;
        match self.expect_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune))) => {
                self.tune = Some(tune)
            }
            other => panic!("expected connection.tune, got {other:?}"),
        }
    }

    /// Runs the client side of the handshake (PLAIN guest/guest, vhost "/").
    pub async fn handshake(&mut self, frame_max: u32, heartbeat: u16) {
        self.handshake_tuned(2047, frame_max, heartbeat).await;
    }

    /// As [`RawConn::handshake`], answering tune with `channel_max` too.
    pub async fn handshake_tuned(&mut self, channel_max: u16, frame_max: u32, heartbeat: u16) {
        self.start().await;
        self.authenticate().await;
        self.send(&tune_ok(channel_max, frame_max, heartbeat)).await;
        self.send(&connection_open("/")).await;
        match self.expect_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// Opens `channel` and waits for open-ok.
    pub async fn open_channel(&mut self, ch: u16) {
        self.send(&channel_open(ch)).await;
        match self.expect_method().await {
            (c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if c == ch => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Expects the server's `connection.close`, answers close-ok, and expects the socket to
    /// be closed after that. Returns the close.
    pub async fn expect_connection_close(&mut self) -> Close {
        let close = loop {
            match self.next_non_heartbeat().await {
                Outcome::Frame(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    break Close {
                        code: c.reply_code,
                        text: c.reply_text.to_string(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    }
                }
                // Frames the server had already queued (e.g. deliveries) may precede the close.
                Outcome::Frame(AMQPFrame::Method(..))
                | Outcome::Frame(AMQPFrame::Header(..))
                | Outcome::Frame(AMQPFrame::Body(..)) => continue,
                other => panic!("expected connection.close, got {other:?}"),
            }
        };
        self.close_ok_then_eof().await;
        close
    }

    /// Answers a connection.close with close-ok and asserts that nothing follows before the
    /// server closes the socket.
    async fn close_ok_then_eof(&mut self) {
        self.send_lossy(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        ))
        .await;
        let rest = self.read_to_eof(DEADLINE).await;
        assert!(
            rest.is_empty(),
            "nothing follows connection.close, got {rest:?}"
        );
    }

    /// Like [`RawConn::expect_connection_close`], but also accepts the server simply dropping
    /// the socket (returns `None` then).
    pub async fn expect_connection_close_or_drop(&mut self) -> Option<Close> {
        match self.next_non_heartbeat().await {
            Outcome::Eof => None,
            Outcome::Frame(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Close(c)),
            )) => {
                self.close_ok_then_eof().await;
                Some(Close {
                    code: c.reply_code,
                    text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                })
            }
            other => panic!("expected connection.close or a closed socket, got {other:?}"),
        }
    }

    /// Expects the server's `channel.close` on `ch`, answers close-ok. Returns the close.
    pub async fn expect_channel_close(&mut self, ch: u16) -> Close {
        match self.expect_method().await {
            (c, AMQPClass::Channel(channel::AMQPMethod::Close(close))) if c == ch => {
                self.send(&method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                ))
                .await;
                Close {
                    code: close.reply_code,
                    text: close.reply_text.to_string(),
                    class_id: close.class_id,
                    method_id: close.method_id,
                }
            }
            other => panic!("expected channel.close on {ch}, got {other:?}"),
        }
    }
}

/// A broker to misbehave against (see [`crate::common::broker`]), with a [`Bystander`] already
/// running on it.
pub async fn broker_with_bystander() -> (TestBroker, Bystander) {
    let broker = crate::common::broker().await;
    let bystander = Bystander::start(&broker).await;
    (broker, bystander)
}

/// A well-behaved lapin client doing publish/consume round trips on its own connection for as
/// long as it lives. Started before a raw test misbehaves; [`Bystander::assert_unaffected`]
/// then shows it kept working through and after the misbehaviour.
pub struct Bystander {
    /// Round trips completed so far; written by the task, read by the test.
    round_trips: Arc<AtomicU64>,
    /// The first error the task met, if any; written by the task.
    error: watch::Receiver<Option<String>>,
    /// Stop signal: dropping the sender (or sending `true`) ends the task.
    stop: watch::Sender<bool>,
    /// The task; awaited by `assert_unaffected`.
    task: JoinHandle<()>,
}

impl Bystander {
    /// Connects with lapin and starts publishing/consuming in the background.
    pub async fn start(broker: &TestBroker) -> Bystander {
        let url = broker.url().to_owned();
        let round_trips = Arc::new(AtomicU64::new(0));
        let (err_tx, err_rx) = watch::channel(None);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let counter = round_trips.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let run = async {
                let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                    .await?;
                let ch = conn.create_channel().await?;
                let q = ch
                    .queue_declare(
                        "".into(),
                        lapin::options::QueueDeclareOptions::exclusive(),
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                let mut consumer = ch
                    .basic_consume(
                        q.name().clone(),
                        "".into(),
                        lapin::options::BasicConsumeOptions::default(),
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                let _ = ready_tx.send(());
                let mut n: u64 = 0;
                loop {
                    if *stop_rx.borrow() {
                        break;
                    }
                    let body = n.to_be_bytes();
                    ch.basic_publish(
                        "".into(),
                        q.name().clone(),
                        Default::default(),
                        &body,
                        Default::default(),
                    )
                    .await?;
                    let delivery = tokio::select! {
                        d = tokio::time::timeout(DEADLINE, consumer.next()) => d,
                        _ = stop_rx.changed() => break,
                    };
                    let delivery = match delivery {
                        Ok(Some(d)) => d?,
                        Ok(None) => {
                            return Err(lapin::Error::from(std::io::Error::other("consumer ended")))
                        }
                        Err(_) => {
                            return Err(lapin::Error::from(std::io::Error::other(
                                "no delivery within the deadline",
                            )))
                        }
                    };
                    if delivery.data != body {
                        return Err(lapin::Error::from(std::io::Error::other("wrong body")));
                    }
                    delivery.acker.ack(Default::default()).await?;
                    n += 1;
                    counter.store(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                conn.close(200, "bystander done".into()).await?;
                Ok::<(), lapin::Error>(())
            };
            if let Err(e) = run.await {
                let _ = err_tx.send(Some(e.to_string()));
            }
        });
        tokio::time::timeout(DEADLINE, ready_rx)
            .await
            .expect("bystander ready within the deadline")
            .expect("bystander started");
        Bystander {
            round_trips,
            error: err_rx,
            stop: stop_tx,
            task,
        }
    }

    /// Asserts the bystander completes more round trips from now on, then stops it and asserts
    /// it never met an error.
    pub async fn assert_unaffected(self) {
        let before = self.round_trips.load(Ordering::SeqCst);
        let progressed = tokio::time::timeout(DEADLINE, async {
            while self.round_trips.load(Ordering::SeqCst) < before + 5 {
                if self.error.borrow().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(DEADLINE, self.task).await;
        if let Some(e) = self.error.borrow().clone() {
            panic!("the well-behaved client failed: {e}");
        }
        assert!(
            progressed.is_ok(),
            "the well-behaved client stalled at {before} round trips"
        );
    }
}

/// On a fresh test broker: starts a [`Bystander`], opens a raw connection (frame_max 131072,
/// no heartbeats; channel 1 opened when `open_channel`), sends `bytes` (one or more frames),
/// and returns the `connection.close` the broker answers with, once the bystander has been
/// checked unaffected.
pub async fn closes_with(open_channel: bool, bytes: &[u8]) -> Close {
    let (broker, bystander) = broker_with_bystander().await;
    let mut conn = RawConn::open(&broker, 131_072, 0).await;
    if open_channel {
        conn.open_channel(1).await;
    }
    conn.send(bytes).await;
    let close = conn.expect_connection_close().await;
    bystander.assert_unaffected().await;
    close
}
