//! A small raw AMQP 0-9-1 client: exactly the frames the runner asks for, and every frame the
//! broker sends back, with nothing checked, retried or hidden on the client side (lapin, for
//! instance, refuses some arguments itself and turns a channel.close into an error value).
//!
//! Frames are built and parsed with `amq-protocol` (lapin's codec), read by the frame layout
//! of AMQP 0-9-1 §4.2.3 (`type u8 | channel u16 | size u32 | payload | 0xCE`). A reader task
//! per connection assembles content (method + header + bodies) and hands everything to the
//! runner in arrival order through an unbounded channel.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use amq_protocol::uri::AMQPUri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The AMQP 0-9-1 protocol header.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The frame-end octet.
const FRAME_END: u8 = 0xCE;
/// The largest frame the reader accepts from a broker (a bound on its allocation).
const MAX_INCOMING_FRAME: usize = 16 << 20;
/// How long the handshake may take.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// A client-side failure (the broker's answers, errors included, are not errors here).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL did not parse.
    #[error("bad AMQP URL {0}: {1}")]
    Url(String, String),
    /// A socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not go as the spec says.
    #[error("handshake: {0}")]
    Handshake(String),
}

/// Where a broker is and how to log in.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// PLAIN user.
    pub user: String,
    /// PLAIN password.
    pub password: String,
    /// The vhost to open.
    pub vhost: String,
}

impl Endpoint {
    /// Parses an `amqp://user:pass@host:port/vhost` URL.
    pub fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let uri = AMQPUri::from_str(url).map_err(|e| ClientError::Url(url.to_owned(), e))?;
        Ok(Endpoint {
            addr: format!("{}:{}", uri.authority.host, uri.authority.port),
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
            vhost: uri.vhost,
        })
    }
}

/// Something the broker sent.
// One value per frame, consumed at once: boxing the content would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Incoming {
    /// A method frame that carries no content.
    Method(u16, AMQPClass),
    /// `basic.deliver`, `basic.get-ok` or `basic.return` with its properties and whole body.
    Content {
        /// The channel.
        ch: u16,
        /// The method that opened the content.
        method: AMQPClass,
        /// The content header's properties.
        props: AMQPProperties,
        /// The body, all frames joined.
        body: Vec<u8>,
    },
    /// The socket closed, or the broker sent something that is not AMQP (the text says which).
    Eof(String),
}

/// One open connection.
pub struct Conn {
    write: OwnedWriteHalf,
    rx: mpsc::UnboundedReceiver<Incoming>,
    /// The reader task; it owns the read half and the sending end of `rx`. Aborted on drop.
    reader: JoinHandle<()>,
    /// The negotiated frame_max.
    pub frame_max: u32,
    /// The negotiated channel_max.
    pub channel_max: u16,
    /// True once the reader reported EOF.
    pub eof: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn encode_into(out: &mut Vec<u8>, frame: &AMQPFrame) {
    let buf = std::mem::take(out);
    match gen_frame(frame)(WriteContext::from(buf)) {
        Ok(ctx) => *out = ctx.write,
        // amq-protocol fails only on values it cannot represent (a short string over 255
        // bytes), which the program format rules out; a frame left out shows up as a
        // missing reply in the trace.
        Err(e) => tracing::error!(cause = ?e, "cannot encode frame"),
    }
}

impl Conn {
    /// Connects and runs the handshake (PLAIN, heartbeats off) asking for `frame_max`.
    pub async fn open(
        endpoint: &Endpoint,
        frame_max: u32,
        cancel_notify: bool,
    ) -> Result<Conn, ClientError> {
        let stream = tokio::time::timeout(HANDSHAKE_DEADLINE, TcpStream::connect(&endpoint.addr))
            .await
            .map_err(|_| ClientError::Handshake("connect timed out".into()))??;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(read, tx));
        let mut conn = Conn {
            write,
            rx,
            reader,
            frame_max,
            channel_max: 2047,
            eof: false,
        };
        tokio::time::timeout(
            HANDSHAKE_DEADLINE,
            conn.handshake(endpoint, frame_max, cancel_notify),
        )
        .await
        .map_err(|_| ClientError::Handshake("handshake timed out".into()))??;
        Ok(conn)
    }

    async fn handshake(
        &mut self,
        endpoint: &Endpoint,
        frame_max: u32,
        cancel_notify: bool,
    ) -> Result<(), ClientError> {
        self.write.write_all(PROTOCOL_HEADER).await?;
        match self.recv_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected start, got {other:?}"
                )))
            }
        }
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "per_consumer_qos",
            "authentication_failure_close",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        if cancel_notify {
            caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString("lepus-difftest".into()),
        );
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let response = format!("\0{}\0{}", endpoint.user, endpoint.password);
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: LongString::from(response.into_bytes()),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = match self.recv_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected tune, got {other:?}"
                )))
            }
        };
        self.channel_max = if tune.channel_max == 0 {
            u16::MAX
        } else {
            tune.channel_max
        };
        self.frame_max = if tune.frame_max == 0 {
            frame_max
        } else {
            frame_max.min(tune.frame_max)
        };
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: self.channel_max,
                frame_max: self.frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: endpoint.vhost.as_str().into(),
            })),
        )
        .await?;
        match self.recv_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => Ok(()),
            other => Err(ClientError::Handshake(format!(
                "expected open-ok, got {other:?}"
            ))),
        }
    }

    async fn recv_method(&mut self) -> Result<(u16, AMQPClass), ClientError> {
        match self.rx.recv().await {
            Some(Incoming::Method(ch, m)) => Ok((ch, m)),
            other => Err(ClientError::Handshake(format!("got {other:?}"))),
        }
    }

    /// Sends one method frame.
    pub async fn send_method(&mut self, ch: u16, method: AMQPClass) -> std::io::Result<()> {
        let mut out = Vec::new();
        encode_into(&mut out, &AMQPFrame::Method(ch, method));
        self.write.write_all(&out).await
    }

    /// Sends several method frames with one write (pipelined requests).
    pub async fn send_methods(&mut self, methods: Vec<(u16, AMQPClass)>) -> std::io::Result<()> {
        let mut out = Vec::new();
        for (ch, m) in methods {
            encode_into(&mut out, &AMQPFrame::Method(ch, m));
        }
        self.write.write_all(&out).await
    }

    /// Sends `basic.publish` with its content header and body frames (at most frame_max - 8
    /// body bytes each), in one write.
    pub async fn publish(
        &mut self,
        ch: u16,
        publish: basic::Publish,
        props: AMQPProperties,
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(body.len() + 256);
        encode_into(
            &mut out,
            &AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Publish(publish))),
        );
        encode_into(
            &mut out,
            &AMQPFrame::Header(
                ch,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: props,
                },
            ),
        );
        let chunk = (self.frame_max.max(4096) - 8) as usize;
        for part in body.chunks(chunk) {
            // Body frames by hand: the layout is trivial and this avoids copying into a
            // `Bytes` per frame.
            out.push(3);
            out.extend_from_slice(&ch.to_be_bytes());
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
            out.push(FRAME_END);
        }
        self.write.write_all(&out).await
    }

    /// The next thing the broker sent, or `None` when nothing came within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Incoming> {
        if self.eof {
            return None;
        }
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(incoming)) => {
                if matches!(incoming, Incoming::Eof(_)) {
                    self.eof = true;
                }
                Some(incoming)
            }
            Ok(None) => {
                self.eof = true;
                Some(Incoming::Eof("reader ended".into()))
            }
            Err(_) => None,
        }
    }

    /// Something already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        if self.eof {
            return None;
        }
        let incoming = self.rx.try_recv().ok()?;
        if matches!(incoming, Incoming::Eof(_)) {
            self.eof = true;
        }
        Some(incoming)
    }
}

/// A content being assembled on one channel.
struct Partial {
    method: AMQPClass,
    props: Option<AMQPProperties>,
    size: u64,
    body: Vec<u8>,
}

async fn read_loop(mut read: OwnedReadHalf, tx: mpsc::UnboundedSender<Incoming>) {
    let reason = read_frames(&mut read, &tx).await;
    let _ = tx.send(Incoming::Eof(reason));
}

/// Reads frames until the socket ends or a frame is malformed; returns why it stopped.
async fn read_frames(read: &mut OwnedReadHalf, tx: &mpsc::UnboundedSender<Incoming>) -> String {
    let mut partial: HashMap<u16, Partial> = HashMap::new();
    loop {
        let mut head = [0u8; 7];
        if let Err(e) = read.read_exact(&mut head).await {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "socket closed".into()
            } else {
                format!("socket error: {e}")
            };
        }
        if &head[..4] == b"AMQP" {
            return "broker sent a protocol header".into();
        }
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        if size > MAX_INCOMING_FRAME {
            return format!("frame of {size} bytes");
        }
        let mut whole = Vec::with_capacity(size + 8);
        whole.extend_from_slice(&head);
        whole.resize(size + 8, 0);
        if let Err(e) = read.read_exact(&mut whole[7..]).await {
            return format!("socket closed inside a frame: {e}");
        }
        if whole[size + 7] != FRAME_END {
            return format!("bad frame end {:#x}", whole[size + 7]);
        }
        let frame = match parse_frame(whole.as_slice()) {
            Ok(([], frame)) => frame,
            Ok(_) => return "frame with trailing bytes".into(),
            Err(e) => return format!("unparsable frame {whole:?}: {e:?}"),
        };
        let out = match frame {
            AMQPFrame::Method(ch, m) => match m {
                AMQPClass::Basic(
                    basic::AMQPMethod::Deliver(_)
                    | basic::AMQPMethod::GetOk(_)
                    | basic::AMQPMethod::Return(_),
                ) => {
                    if partial.contains_key(&ch) {
                        return format!("method on channel {ch} inside a content");
                    }
                    partial.insert(
                        ch,
                        Partial {
                            method: m,
                            props: None,
                            size: 0,
                            body: Vec::new(),
                        },
                    );
                    None
                }
                m => Some(Incoming::Method(ch, m)),
            },
            AMQPFrame::Header(ch, header) => {
                let Some(p) = partial.get_mut(&ch) else {
                    return format!("content header on channel {ch} without a method");
                };
                if p.props.is_some() {
                    return format!("second content header on channel {ch}");
                }
                p.props = Some(header.properties);
                p.size = header.body_size;
                if p.size == 0 {
                    partial.remove(&ch).map(|p| done(ch, p))
                } else {
                    None
                }
            }
            AMQPFrame::Body(ch, data) => {
                let Some(p) = partial.get_mut(&ch) else {
                    return format!("body frame on channel {ch} without a method");
                };
                if p.props.is_none() {
                    return format!("body frame on channel {ch} before the header");
                }
                p.body.extend_from_slice(&data);
                if p.body.len() as u64 > p.size {
                    return format!("body on channel {ch} longer than announced");
                }
                if p.body.len() as u64 == p.size {
                    partial.remove(&ch).map(|p| done(ch, p))
                } else {
                    None
                }
            }
            AMQPFrame::Heartbeat => None,
            other => return format!("unexpected frame {other:?}"),
        };
        if let Some(incoming) = out {
            if tx.send(incoming).is_err() {
                return "runner gone".into();
            }
        }
    }
}

fn done(ch: u16, p: Partial) -> Incoming {
    Incoming::Content {
        ch,
        method: p.method,
        props: p.props.unwrap_or_default(),
        body: p.body,
    }
}
