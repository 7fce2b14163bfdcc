//! A program: the operations one differential run sends, and their text form (one operation a
//! line, the form a shrunk failure is printed in and a regression test stores).
//!
//! Names are symbols, not the names on the wire: the runner gives every run a fresh prefix, so
//! that programs never collide on a shared RabbitMQ and a printed program reads the same
//! whatever run found it.
//!
//! ```text
//! frame_max 4096                           the frame_max the client asks for
//! c1 no-cancel-notify                      connection 1 leaves out consumer_cancel_notify
//! c0.1 queue.declare q0 exclusive args={x-max-length:I(2)}
//! c0.1 queue.bind q0 -> amq.topic key="a.*"
//! c0.1 basic.publish amq.topic key="a.b" mandatory props(dm=2 hdr={k:S"v"}) body=12
//! c0.1 basic.consume q0 tag=ct0
//! c0.1 basic.ack #0 multiple
//! c0 connection.close
//! ```
//!
//! | symbol | meaning |
//! |---|---|
//! | `q0`..`q4`, `e0`..`e3` | `<prefix>q0` …, declared (or not) by the program |
//! | `qL`, `eL` | a 255-byte name |
//! | `""` | the empty name: a server-named queue in `queue.declare`, the channel's last queue elsewhere; the default exchange |
//! | `sn0`, `sn1` … | the server-named queues, in the order their declare-ok arrived |
//! | `amq.q`, `amq.x` | a name in the reserved `amq.` space (`amq.<prefix>q`) |
//! | `amq.direct` … | the predeclared exchanges |
//! | `ct0`.., `ctL`, `sct0`.. | consumer tags: chosen, 255 bytes, or the n-th server-generated one |
//! | `#2`, `latest`, `zero`, `unknown` | a delivery: the 3rd outstanding one of the channel (by message, mod count), the last tag delivered, tag 0, a tag never delivered |
//! | `m5+12` (in traces) | the message of the 6th publish of the program (ids count from 0), 12 body bytes |

use std::collections::BTreeSet;
use std::fmt;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{FieldTable, ShortString};

use crate::text::{quote, render_table, Cursor, ParseError};

/// How many fixed queue names (`q0`..) and exchange names (`e0`..) a program uses.
pub const FIXED_QUEUES: u8 = 5;
/// See [`FIXED_QUEUES`].
pub const FIXED_EXCHANGES: u8 = 4;

/// A queue name, as a symbol (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    /// `q<k>`.
    Fixed(u8),
    /// `qL`: 255 bytes.
    Long,
    /// `sn<k>`: the k-th server-named queue.
    Server(u8),
    /// `""`.
    Empty,
    /// `amq.q`: reserved.
    Reserved,
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueName::Fixed(k) => write!(f, "q{k}"),
            QueueName::Long => f.write_str("qL"),
            QueueName::Server(k) => write!(f, "sn{k}"),
            QueueName::Empty => f.write_str("\"\""),
            QueueName::Reserved => f.write_str("amq.q"),
        }
    }
}

/// The predeclared exchanges a program may use.
pub const PREDECLARED: [&str; 5] = [
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "amq.headers",
    "amq.match",
];

/// An exchange name, as a symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExchangeName {
    /// `e<k>`.
    Fixed(u8),
    /// `eL`: 255 bytes.
    Long,
    /// `""`: the default exchange.
    Default,
    /// One of [`PREDECLARED`] (the index).
    Amq(u8),
    /// `amq.x`: reserved.
    Reserved,
}

impl fmt::Display for ExchangeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeName::Fixed(k) => write!(f, "e{k}"),
            ExchangeName::Long => f.write_str("eL"),
            ExchangeName::Default => f.write_str("\"\""),
            ExchangeName::Amq(i) => f.write_str(PREDECLARED[usize::from(*i) % PREDECLARED.len()]),
            ExchangeName::Reserved => f.write_str("amq.x"),
        }
    }
}

/// A routing key or binding key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// These bytes (a topic pattern, a word, empty).
    Lit(String),
    /// The actual name of this queue (what the default exchange routes by).
    Queue(QueueName),
}

impl Key {
    /// The key naming queue `q` (the empty name is the empty key).
    pub fn queue(q: QueueName) -> Key {
        match q {
            QueueName::Empty => Key::Lit(String::new()),
            q => Key::Queue(q),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Lit(s) => f.write_str(&quote(s.as_bytes())),
            Key::Queue(q) => q.fmt(f),
        }
    }
}

/// A consumer tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerTag {
    /// `ct<k>`.
    Fixed(u8),
    /// `ctL`: 255 bytes.
    Long,
    /// In `basic.consume`, `""` (the server generates one); in `basic.cancel`, `sct<k>`, the
    /// k-th generated tag.
    Server(u8),
}

impl ConsumerTag {
    fn fmt_in_consume(&self) -> String {
        match self {
            ConsumerTag::Server(_) => "\"\"".to_owned(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ConsumerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumerTag::Fixed(k) => write!(f, "ct{k}"),
            ConsumerTag::Long => f.write_str("ctL"),
            ConsumerTag::Server(k) => write!(f, "sct{k}"),
        }
    }
}

/// Which delivery an ack, nack or reject names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The k-th (mod their count) outstanding delivery of the channel, ordered by message id
    /// (not by tag: tags of deliveries from different queues may interleave either way).
    Outstanding(u8),
    /// The last delivery tag the channel received (possibly acked already).
    Latest,
    /// Tag 0 (with `multiple`: everything outstanding).
    Zero,
    /// A tag never delivered (the last one + 1000).
    Unknown,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Outstanding(k) => write!(f, "#{k}"),
            Target::Latest => f.write_str("latest"),
            Target::Zero => f.write_str("zero"),
            Target::Unknown => f.write_str("unknown"),
        }
    }
}

/// An exchange type in `exchange.declare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// `direct`.
    Direct,
    /// `fanout`.
    Fanout,
    /// `topic`.
    Topic,
    /// `headers`.
    Headers,
    /// `x-bogus`: a type no broker knows (503 COMMAND_INVALID).
    Bogus,
}

impl ExchangeKind {
    /// The type as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::Bogus => "x-bogus",
        }
    }
}

/// Basic properties of a publish (all optional, as on the wire).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Props {
    /// content-type.
    pub content_type: Option<String>,
    /// content-encoding.
    pub content_encoding: Option<String>,
    /// headers.
    pub headers: Option<FieldTable>,
    /// delivery-mode.
    pub delivery_mode: Option<u8>,
    /// priority.
    pub priority: Option<u8>,
    /// correlation-id.
    pub correlation_id: Option<String>,
    /// reply-to.
    pub reply_to: Option<String>,
    /// expiration.
    pub expiration: Option<String>,
    /// message-id.
    pub message_id: Option<String>,
    /// timestamp.
    pub timestamp: Option<u64>,
    /// type.
    pub kind: Option<String>,
    /// user-id.
    pub user_id: Option<String>,
    /// app-id.
    pub app_id: Option<String>,
    /// cluster-id.
    pub cluster_id: Option<String>,
}

impl Props {
    /// The properties as amq-protocol sends them.
    pub fn to_amqp(&self) -> AMQPProperties {
        /// `p` with `set` applied to `v` when there is one (amq-protocol's setters take values,
        /// not options).
        fn with<T>(
            p: AMQPProperties,
            v: Option<T>,
            set: fn(AMQPProperties, T) -> AMQPProperties,
        ) -> AMQPProperties {
            match v {
                Some(v) => set(p, v),
                None => p,
            }
        }
        let s = |v: &Option<String>| v.as_deref().map(ShortString::from);
        let p = AMQPProperties::default();
        let p = with(p, s(&self.content_type), AMQPProperties::with_content_type);
        let p = with(
            p,
            s(&self.content_encoding),
            AMQPProperties::with_content_encoding,
        );
        let p = with(p, self.headers.clone(), AMQPProperties::with_headers);
        let p = with(p, self.delivery_mode, AMQPProperties::with_delivery_mode);
        let p = with(p, self.priority, AMQPProperties::with_priority);
        let p = with(
            p,
            s(&self.correlation_id),
            AMQPProperties::with_correlation_id,
        );
        let p = with(p, s(&self.reply_to), AMQPProperties::with_reply_to);
        let p = with(p, s(&self.expiration), AMQPProperties::with_expiration);
        let p = with(p, s(&self.message_id), AMQPProperties::with_message_id);
        let p = with(p, self.timestamp, AMQPProperties::with_timestamp);
        let p = with(p, s(&self.kind), AMQPProperties::with_type);
        let p = with(p, s(&self.user_id), AMQPProperties::with_user_id);
        let p = with(p, s(&self.app_id), AMQPProperties::with_app_id);
        with(p, s(&self.cluster_id), AMQPProperties::with_cluster_id)
    }

    /// Reads properties back from amq-protocol's form.
    pub fn from_amqp(p: &AMQPProperties) -> Props {
        let s = |v: &Option<ShortString>| v.as_ref().map(|v| v.as_str().to_owned());
        Props {
            content_type: s(p.content_type()),
            content_encoding: s(p.content_encoding()),
            headers: p.headers().clone(),
            delivery_mode: *p.delivery_mode(),
            priority: *p.priority(),
            correlation_id: s(p.correlation_id()),
            reply_to: s(p.reply_to()),
            expiration: s(p.expiration()),
            message_id: s(p.message_id()),
            timestamp: *p.timestamp(),
            kind: s(p.kind()),
            user_id: s(p.user_id()),
            app_id: s(p.app_id()),
            cluster_id: s(p.cluster_id()),
        }
    }

    /// `props(ct="a" hdr={..} dm=2 ...)`, absent fields left out; `map_str` rewrites strings
    /// (the trace's name symbols). `props()` when none is set.
    pub fn render(&self, map_str: &dyn Fn(&[u8]) -> Option<String>) -> String {
        let mut parts: Vec<String> = Vec::new();
        let string = |parts: &mut Vec<String>, name: &str, v: &Option<String>| {
            if let Some(v) = v {
                let value = map_str(v.as_bytes()).unwrap_or_else(|| quote(v.as_bytes()));
                parts.push(format!("{name}={value}"));
            }
        };
        string(&mut parts, "ct", &self.content_type);
        string(&mut parts, "ce", &self.content_encoding);
        if let Some(h) = &self.headers {
            parts.push(format!("hdr={}", render_table(h, map_str)));
        }
        if let Some(v) = self.delivery_mode {
            parts.push(format!("dm={v}"));
        }
        if let Some(v) = self.priority {
            parts.push(format!("pri={v}"));
        }
        string(&mut parts, "cid", &self.correlation_id);
        string(&mut parts, "rt", &self.reply_to);
        string(&mut parts, "exp", &self.expiration);
        string(&mut parts, "mid", &self.message_id);
        if let Some(v) = self.timestamp {
            parts.push(format!("ts={v}"));
        }
        string(&mut parts, "type", &self.kind);
        string(&mut parts, "uid", &self.user_id);
        string(&mut parts, "app", &self.app_id);
        string(&mut parts, "cl", &self.cluster_id);
        format!("props({})", parts.join(" "))
    }

    fn parse(c: &mut Cursor<'_>) -> Result<Props, ParseError> {
        c.expect("props(")?;
        let mut p = Props::default();
        while !c.eat(")") {
            let name = c.word()?;
            c.expect("=")?;
            match name {
                "hdr" => p.headers = Some(c.table()?),
                "dm" => p.delivery_mode = Some(c.number()?),
                "pri" => p.priority = Some(c.number()?),
                "ts" => p.timestamp = Some(c.number()?),
                _ => {
                    let v = c.quoted_str()?;
                    if v.len() > 255 {
                        return Err(c.error("property over 255 bytes"));
                    }
                    let slot = match name {
                        "ct" => &mut p.content_type,
                        "ce" => &mut p.content_encoding,
                        "cid" => &mut p.correlation_id,
                        "rt" => &mut p.reply_to,
                        "exp" => &mut p.expiration,
                        "mid" => &mut p.message_id,
                        "type" => &mut p.kind,
                        "uid" => &mut p.user_id,
                        "app" => &mut p.app_id,
                        "cl" => &mut p.cluster_id,
                        _ => return Err(c.error(format!("unknown property {name}"))),
                    };
                    *slot = Some(v);
                }
            }
        }
        Ok(p)
    }
}

/// What one operation does.
// Programs hold a few dozen of these: the size of `Publish` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // the fields are the AMQP method's arguments, named as in the spec
pub enum OpKind {
    ExchangeDeclare {
        x: ExchangeName,
        kind: ExchangeKind,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        args: FieldTable,
    },
    ExchangeDelete {
        x: ExchangeName,
        if_unused: bool,
    },
    ExchangeBind {
        dest: ExchangeName,
        src: ExchangeName,
        key: Key,
        args: FieldTable,
    },
    ExchangeUnbind {
        dest: ExchangeName,
        src: ExchangeName,
        key: Key,
        args: FieldTable,
    },
    QueueDeclare {
        q: QueueName,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        args: FieldTable,
    },
    QueueBind {
        q: QueueName,
        x: ExchangeName,
        key: Key,
        args: FieldTable,
    },
    QueueUnbind {
        q: QueueName,
        x: ExchangeName,
        key: Key,
        args: FieldTable,
    },
    QueuePurge {
        q: QueueName,
    },
    QueueDelete {
        q: QueueName,
        if_unused: bool,
        if_empty: bool,
    },
    /// `body` is the body length; the body is the message id padded with `.` (see
    /// `runner::body_for`).
    Publish {
        x: ExchangeName,
        key: Key,
        mandatory: bool,
        immediate: bool,
        props: Props,
        body: u32,
    },
    Get {
        q: QueueName,
        no_ack: bool,
    },
    Consume {
        q: QueueName,
        tag: ConsumerTag,
        no_ack: bool,
        exclusive: bool,
        args: FieldTable,
    },
    Cancel {
        tag: ConsumerTag,
    },
    Ack {
        target: Target,
        multiple: bool,
    },
    Nack {
        target: Target,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        target: Target,
        requeue: bool,
    },
    Qos {
        prefetch_count: u16,
        global: bool,
    },
    Recover {
        requeue: bool,
    },
    ConfirmSelect,
    TxSelect,
    TxCommit,
    TxRollback,
    ChannelClose,
    ConnectionClose,
}

impl OpKind {
    /// The AMQP method name (`queue.declare`).
    pub fn verb(&self) -> &'static str {
        match self {
            OpKind::ExchangeDeclare { .. } => "exchange.declare",
            OpKind::ExchangeDelete { .. } => "exchange.delete",
            OpKind::ExchangeBind { .. } => "exchange.bind",
            OpKind::ExchangeUnbind { .. } => "exchange.unbind",
            OpKind::QueueDeclare { .. } => "queue.declare",
            OpKind::QueueBind { .. } => "queue.bind",
            OpKind::QueueUnbind { .. } => "queue.unbind",
            OpKind::QueuePurge { .. } => "queue.purge",
            OpKind::QueueDelete { .. } => "queue.delete",
            OpKind::Publish { .. } => "basic.publish",
            OpKind::Get { .. } => "basic.get",
            OpKind::Consume { .. } => "basic.consume",
            OpKind::Cancel { .. } => "basic.cancel",
            OpKind::Ack { .. } => "basic.ack",
            OpKind::Nack { .. } => "basic.nack",
            OpKind::Reject { .. } => "basic.reject",
            OpKind::Qos { .. } => "basic.qos",
            OpKind::Recover { .. } => "basic.recover",
            OpKind::ConfirmSelect => "confirm.select",
            OpKind::TxSelect => "tx.select",
            OpKind::TxCommit => "tx.commit",
            OpKind::TxRollback => "tx.rollback",
            OpKind::ChannelClose => "channel.close",
            OpKind::ConnectionClose => "connection.close",
        }
    }
}

/// One operation: what, on which connection and channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// The program's connection number (the runner opens it on first use, and again after it
    /// closed).
    pub conn: u8,
    /// The channel (opened on first use, and again after it closed); 0 for connection.close.
    pub ch: u16,
    /// What it does.
    pub kind: OpKind,
}

/// A whole program.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The frame_max the client asks for in tune-ok (the broker's limit if lower).
    pub frame_max: u32,
    /// Connections that leave `consumer_cancel_notify` out of their capabilities.
    pub no_cancel_notify: BTreeSet<u8>,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

fn flag(out: &mut String, on: bool, name: &str) {
    if on {
        out.push(' ');
        out.push_str(name);
    }
}

fn args_into(out: &mut String, args: &FieldTable) {
    if !args.inner().is_empty() {
        out.push_str(" args=");
        out.push_str(&render_table(args, &|_| None));
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = if matches!(self.kind, OpKind::ConnectionClose) {
            format!("c{}", self.conn)
        } else {
            format!("c{}.{}", self.conn, self.ch)
        };
        out.push(' ');
        out.push_str(self.kind.verb());
        match &self.kind {
            OpKind::ExchangeDeclare {
                x,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                args,
            } => {
                out.push_str(&format!(" {x} {}", kind.as_str()));
                flag(&mut out, *passive, "passive");
                flag(&mut out, *durable, "durable");
                flag(&mut out, *auto_delete, "auto-delete");
                flag(&mut out, *internal, "internal");
                args_into(&mut out, args);
            }
            OpKind::ExchangeDelete { x, if_unused } => {
                out.push_str(&format!(" {x}"));
                flag(&mut out, *if_unused, "if-unused");
            }
            OpKind::ExchangeBind {
                dest,
                src,
                key,
                args,
            }
            | OpKind::ExchangeUnbind {
                dest,
                src,
                key,
                args,
            } => {
                out.push_str(&format!(" {dest} <- {src} key={key}"));
                args_into(&mut out, args);
            }
            OpKind::QueueDeclare {
                q,
                passive,
                durable,
                exclusive,
                auto_delete,
                args,
            } => {
                out.push_str(&format!(" {q}"));
                flag(&mut out, *passive, "passive");
                flag(&mut out, *durable, "durable");
                flag(&mut out, *exclusive, "exclusive");
                flag(&mut out, *auto_delete, "auto-delete");
                args_into(&mut out, args);
            }
            OpKind::QueueBind { q, x, key, args } | OpKind::QueueUnbind { q, x, key, args } => {
                out.push_str(&format!(" {q} -> {x} key={key}"));
                args_into(&mut out, args);
            }
            OpKind::QueuePurge { q } => out.push_str(&format!(" {q}")),
            OpKind::QueueDelete {
                q,
                if_unused,
                if_empty,
            } => {
                out.push_str(&format!(" {q}"));
                flag(&mut out, *if_unused, "if-unused");
                flag(&mut out, *if_empty, "if-empty");
            }
            OpKind::Publish {
                x,
                key,
                mandatory,
                immediate,
                props,
                body,
            } => {
                out.push_str(&format!(" {x} key={key}"));
                flag(&mut out, *mandatory, "mandatory");
                flag(&mut out, *immediate, "immediate");
                if *props != Props::default() {
                    out.push(' ');
                    out.push_str(&props.render(&|_| None));
                }
                out.push_str(&format!(" body={body}"));
            }
            OpKind::Get { q, no_ack } => {
                out.push_str(&format!(" {q}"));
                flag(&mut out, *no_ack, "no-ack");
            }
            OpKind::Consume {
                q,
                tag,
                no_ack,
                exclusive,
                args,
            } => {
                out.push_str(&format!(" {q} tag={}", tag.fmt_in_consume()));
                flag(&mut out, *no_ack, "no-ack");
                flag(&mut out, *exclusive, "exclusive");
                args_into(&mut out, args);
            }
            OpKind::Cancel { tag } => out.push_str(&format!(" {tag}")),
            OpKind::Ack { target, multiple } => {
                out.push_str(&format!(" {target}"));
                flag(&mut out, *multiple, "multiple");
            }
            OpKind::Nack {
                target,
                multiple,
                requeue,
            } => {
                out.push_str(&format!(" {target}"));
                flag(&mut out, *multiple, "multiple");
                flag(&mut out, *requeue, "requeue");
            }
            OpKind::Reject { target, requeue } => {
                out.push_str(&format!(" {target}"));
                flag(&mut out, *requeue, "requeue");
            }
            OpKind::Qos {
                prefetch_count,
                global,
            } => {
                out.push_str(&format!(" {prefetch_count}"));
                flag(&mut out, *global, "global");
            }
            OpKind::Recover { requeue } => flag(&mut out, *requeue, "requeue"),
            OpKind::ConfirmSelect
            | OpKind::TxSelect
            | OpKind::TxCommit
            | OpKind::TxRollback
            | OpKind::ChannelClose
            | OpKind::ConnectionClose => {}
        }
        f.write_str(&out)
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "frame_max {}", self.frame_max)?;
        for c in &self.no_cancel_notify {
            writeln!(f, "c{c} no-cancel-notify")?;
        }
        for op in &self.ops {
            writeln!(f, "{op}")?;
        }
        Ok(())
    }
}

/// A number after a letter prefix (`q12` with prefix `q`).
fn suffix_number(word: &str, prefix: &str) -> Option<u8> {
    word.strip_prefix(prefix)?.parse().ok()
}

fn queue_name(c: &mut Cursor<'_>) -> Result<QueueName, ParseError> {
    if c.eat("\"\"") {
        return Ok(QueueName::Empty);
    }
    let w = c.word()?;
    if w == "qL" {
        Ok(QueueName::Long)
    } else if w == "amq.q" {
        Ok(QueueName::Reserved)
    } else if let Some(k) = suffix_number(w, "sn") {
        Ok(QueueName::Server(k))
    } else if let Some(k) = suffix_number(w, "q") {
        Ok(QueueName::Fixed(k))
    } else {
        Err(c.error(format!("not a queue name: {w}")))
    }
}

fn exchange_name(c: &mut Cursor<'_>) -> Result<ExchangeName, ParseError> {
    if c.eat("\"\"") {
        return Ok(ExchangeName::Default);
    }
    let w = c.word()?;
    if w == "eL" {
        Ok(ExchangeName::Long)
    } else if w == "amq.x" {
        Ok(ExchangeName::Reserved)
    } else if let Some(i) = PREDECLARED.iter().position(|p| *p == w) {
        Ok(ExchangeName::Amq(i as u8))
    } else if let Some(k) = suffix_number(w, "e") {
        Ok(ExchangeName::Fixed(k))
    } else {
        Err(c.error(format!("not an exchange name: {w}")))
    }
}

fn key(c: &mut Cursor<'_>) -> Result<Key, ParseError> {
    if c.peek() == Some('"') {
        Ok(Key::Lit(c.quoted_str()?))
    } else {
        Ok(Key::Queue(queue_name(c)?))
    }
}

fn consumer_tag(c: &mut Cursor<'_>) -> Result<ConsumerTag, ParseError> {
    if c.eat("\"\"") {
        return Ok(ConsumerTag::Server(0));
    }
    let w = c.word()?;
    if w == "ctL" {
        Ok(ConsumerTag::Long)
    } else if let Some(k) = suffix_number(w, "sct") {
        Ok(ConsumerTag::Server(k))
    } else if let Some(k) = suffix_number(w, "ct") {
        Ok(ConsumerTag::Fixed(k))
    } else {
        Err(c.error(format!("not a consumer tag: {w}")))
    }
}

fn target(c: &mut Cursor<'_>) -> Result<Target, ParseError> {
    let w = c.word()?;
    match w {
        "latest" => Ok(Target::Latest),
        "zero" => Ok(Target::Zero),
        "unknown" => Ok(Target::Unknown),
        _ => w
            .strip_prefix('#')
            .and_then(|k| k.parse().ok())
            .map(Target::Outstanding)
            .ok_or_else(|| c.error(format!("not a delivery: {w}"))),
    }
}

/// The optional trailing items of an operation: flags and `name=value` pairs.
#[derive(Default)]
struct Items {
    flags: BTreeSet<String>,
    args: Option<FieldTable>,
    key: Option<Key>,
    tag: Option<ConsumerTag>,
    props: Option<Props>,
    body: Option<u32>,
}

impl Items {
    fn parse(c: &mut Cursor<'_>) -> Result<Items, ParseError> {
        let mut items = Items::default();
        while !c.at_end() {
            if c.rest().starts_with("props(") {
                items.props = Some(Props::parse(c)?);
                continue;
            }
            let w = c.word()?;
            if c.eat("=") {
                match w {
                    "args" => items.args = Some(c.table()?),
                    "key" => items.key = Some(key(c)?),
                    "tag" => items.tag = Some(consumer_tag(c)?),
                    "body" => items.body = Some(c.number()?),
                    _ => return Err(c.error(format!("unknown item {w}="))),
                }
            } else {
                items.flags.insert(w.to_owned());
            }
        }
        Ok(items)
    }

    /// Reads the items left on the line, lets `take` take the ones its operation has (`c` for
    /// its errors), then fails on any item left over.
    fn take<T>(
        c: &mut Cursor<'_>,
        take: impl FnOnce(&mut Items, &Cursor<'_>) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        let mut items = Items::parse(c)?;
        let taken = take(&mut items, c)?;
        items.finish(c)?;
        Ok(taken)
    }

    /// Takes flag `name`.
    fn flag(&mut self, name: &str) -> bool {
        self.flags.remove(name)
    }

    fn args(&mut self) -> FieldTable {
        self.args.take().unwrap_or_default()
    }

    fn key(&mut self, c: &Cursor<'_>) -> Result<Key, ParseError> {
        self.key.take().ok_or_else(|| c.error("missing key="))
    }

    /// Fails on anything the operation did not take.
    fn finish(self, c: &Cursor<'_>) -> Result<(), ParseError> {
        if let Some(f) = self.flags.iter().next() {
            return Err(c.error(format!("unknown flag {f}")));
        }
        if self.args.is_some()
            || self.key.is_some()
            || self.tag.is_some()
            || self.props.is_some()
            || self.body.is_some()
        {
            return Err(c.error("item this operation does not take"));
        }
        Ok(())
    }
}

impl Op {
    /// Parses one operation line.
    pub fn parse(line: &str) -> Result<Op, ParseError> {
        let mut c = Cursor::new(line);
        let head = c.word()?;
        let (conn, ch) = {
            let body = head
                .strip_prefix('c')
                .ok_or_else(|| c.error("expected c<conn>.<channel>"))?;
            match body.split_once('.') {
                Some((conn, ch)) => (
                    conn.parse().map_err(|_| c.error("bad connection number"))?,
                    ch.parse().map_err(|_| c.error("bad channel number"))?,
                ),
                None => (
                    body.parse().map_err(|_| c.error("bad connection number"))?,
                    0,
                ),
            }
        };
        let verb = c.word()?;
        let kind = match verb {
            "exchange.declare" => {
                let x = exchange_name(&mut c)?;
                let kind = match c.word()? {
                    "direct" => ExchangeKind::Direct,
                    "fanout" => ExchangeKind::Fanout,
                    "topic" => ExchangeKind::Topic,
                    "headers" => ExchangeKind::Headers,
                    "x-bogus" => ExchangeKind::Bogus,
                    other => return Err(c.error(format!("unknown exchange type {other}"))),
                };
                Items::take(&mut c, |it, _| {
                    Ok(OpKind::ExchangeDeclare {
                        x,
                        kind,
                        passive: it.flag("passive"),
                        durable: it.flag("durable"),
                        auto_delete: it.flag("auto-delete"),
                        internal: it.flag("internal"),
                        args: it.args(),
                    })
                })?
            }
            "exchange.delete" => {
                let x = exchange_name(&mut c)?;
                Items::take(&mut c, |it, _| {
                    Ok(OpKind::ExchangeDelete {
                        x,
                        if_unused: it.flag("if-unused"),
                    })
                })?
            }
            "exchange.bind" | "exchange.unbind" => {
                let dest = exchange_name(&mut c)?;
                c.expect("<-")?;
                let src = exchange_name(&mut c)?;
                let (key, args) = Items::take(&mut c, |it, c| Ok((it.key(c)?, it.args())))?;
                if verb == "exchange.bind" {
                    OpKind::ExchangeBind {
                        dest,
                        src,
                        key,
                        args,
                    }
                } else {
                    OpKind::ExchangeUnbind {
                        dest,
                        src,
                        key,
                        args,
                    }
                }
            }
            "queue.declare" => {
                let q = queue_name(&mut c)?;
                Items::take(&mut c, |it, _| {
                    Ok(OpKind::QueueDeclare {
                        q,
                        passive: it.flag("passive"),
                        durable: it.flag("durable"),
                        exclusive: it.flag("exclusive"),
                        auto_delete: it.flag("auto-delete"),
                        args: it.args(),
                    })
                })?
            }
            "queue.bind" | "queue.unbind" => {
                let q = queue_name(&mut c)?;
                c.expect("->")?;
                let x = exchange_name(&mut c)?;
                let (key, args) = Items::take(&mut c, |it, c| Ok((it.key(c)?, it.args())))?;
                if verb == "queue.bind" {
                    OpKind::QueueBind { q, x, key, args }
                } else {
                    OpKind::QueueUnbind { q, x, key, args }
                }
            }
            "queue.purge" => {
                let q = queue_name(&mut c)?;
                Items::parse(&mut c)?.finish(&c)?;
                OpKind::QueuePurge { q }
            }
            "queue.delete" => {
                let q = queue_name(&mut c)?;
                Items::take(&mut c, |it, _| {
                    Ok(OpKind::QueueDelete {
                        q,
                        if_unused: it.flag("if-unused"),
                        if_empty: it.flag("if-empty"),
                    })
                })?
            }
            "basic.publish" => {
                let x = exchange_name(&mut c)?;
                Items::take(&mut c, |it, c| {
                    Ok(OpKind::Publish {
                        x,
                        key: it.key(c)?,
                        mandatory: it.flag("mandatory"),
                        immediate: it.flag("immediate"),
                        props: it.props.take().unwrap_or_default(),
                        body: it.body.take().ok_or_else(|| c.error("missing body="))?,
                    })
                })?
            }
            "basic.get" => {
                let q = queue_name(&mut c)?;
                Items::take(&mut c, |it, _| {
                    Ok(OpKind::Get {
                        q,
                        no_ack: it.flag("no-ack"),
                    })
                })?
            }
            "basic.consume" => {
                let q = queue_name(&mut c)?;
                Items::take(&mut c, |it, c| {
                    Ok(OpKind::Consume {
                        q,
                        tag: it.tag.take().ok_or_else(|| c.error("missing tag="))?,
                        no_ack: it.flag("no-ack"),
                        exclusive: it.flag("exclusive"),
                        args: it.args(),
                    })
                })?
            }
            "basic.cancel" => {
                let tag = consumer_tag(&mut c)?;
                Items::parse(&mut c)?.finish(&c)?;
                OpKind::Cancel { tag }
            }
            "basic.ack" | "basic.nack" | "basic.reject" => {
                let target = target(&mut c)?;
                Items::take(&mut c, |it, _| {
                    Ok(match verb {
                        "basic.ack" => OpKind::Ack {
                            target,
                            multiple: it.flag("multiple"),
                        },
                        "basic.nack" => OpKind::Nack {
                            target,
                            multiple: it.flag("multiple"),
                            requeue: it.flag("requeue"),
                        },
                        _ => OpKind::Reject {
                            target,
                            requeue: it.flag("requeue"),
                        },
                    })
                })?
            }
            "basic.qos" => {
                let prefetch_count = c.number()?;
                Items::take(&mut c, |it, _| {
                    Ok(OpKind::Qos {
                        prefetch_count,
                        global: it.flag("global"),
                    })
                })?
            }
            "basic.recover" => Items::take(&mut c, |it, _| {
                Ok(OpKind::Recover {
                    requeue: it.flag("requeue"),
                })
            })?,
            "confirm.select" | "tx.select" | "tx.commit" | "tx.rollback" | "channel.close"
            | "connection.close" => {
                Items::parse(&mut c)?.finish(&c)?;
                match verb {
                    "confirm.select" => OpKind::ConfirmSelect,
                    "tx.select" => OpKind::TxSelect,
                    "tx.commit" => OpKind::TxCommit,
                    "tx.rollback" => OpKind::TxRollback,
                    "channel.close" => OpKind::ChannelClose,
                    _ => OpKind::ConnectionClose,
                }
            }
            other => return Err(c.error(format!("unknown operation {other}"))),
        };
        if ch == 0 && !matches!(kind, OpKind::ConnectionClose) {
            return Err(c.error("channel operations need a channel number above 0"));
        }
        Ok(Op { conn, ch, kind })
    }
}

impl std::str::FromStr for Program {
    type Err = ParseError;

    /// Parses a program's text (blank lines and `//` comments are skipped).
    fn from_str(text: &str) -> Result<Program, ParseError> {
        let mut program = Program {
            frame_max: 131_072,
            no_cancel_notify: BTreeSet::new(),
            ops: Vec::new(),
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            if let Some(n) = line.strip_prefix("frame_max ") {
                let mut c = Cursor::new(n);
                program.frame_max = c.number()?;
                continue;
            }
            if let Some(conn) = line.strip_suffix(" no-cancel-notify") {
                let c = Cursor::new(line);
                let n = conn
                    .strip_prefix('c')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| c.error("expected c<conn> no-cancel-notify"))?;
                program.no_cancel_notify.insert(n);
                continue;
            }
            program.ops.push(Op::parse(line)?);
        }
        Ok(program)
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::AMQPValue;

    use super::*;

    #[test]
    fn every_property_survives_amq_protocols_form() {
        let mut headers = FieldTable::default();
        headers.insert("h".into(), AMQPValue::LongInt(7));
        let s = |v: &str| Some(v.to_owned());
        let all = Props {
            content_type: s("ct"),
            content_encoding: s("ce"),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(5),
            correlation_id: s("cid"),
            reply_to: s("rt"),
            expiration: s("60000"),
            message_id: s("mid"),
            timestamp: Some(1_700_000_000),
            kind: s("type"),
            user_id: s("guest"),
            app_id: s("app"),
            cluster_id: s("cl"),
        };
        assert_eq!(Props::from_amqp(&all.to_amqp()), all);
        assert_eq!(Props::default().to_amqp(), AMQPProperties::default());
    }
}
