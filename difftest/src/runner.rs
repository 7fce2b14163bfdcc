//! Runs a program against one broker and records its [`Trace`].
//!
//! Operations run one at a time, in program order, each on its connection and channel (opened
//! on first use, and again after a close). A synchronous method waits for its reply. Then the
//! runner lets the broker *settle* before it observes anything, so that what it records is
//! defined rather than a race:
//!
//! 1. every open channel of the program gets `exchange.declare passive amq.direct`, a method
//!    with no effect: its reply comes after everything the broker did for the channel's earlier
//!    methods (publishes routed, acks applied), and after the deliveries already on their way
//!    to that channel; a channel in confirm mode is then waited on until every publish is
//!    confirmed;
//! 2. every queue the program declared gets a passive `queue.declare` (from its owner's
//!    connection when exclusive), which RabbitMQ answers from the queue's own process: after
//!    the queue has handled every earlier message;
//! 3. repeat until a round brings no new event and the same queue states (dead-lettering and
//!    requeueing can take more than one hop). Operations that close things (channel and
//!    connection close, cancel, delete) are followed by a short delay first, because RabbitMQ
//!    removes exclusive and auto-delete queues asynchronously. Once the program has sent a
//!    declare of a quorum queue, every operation is: a quorum queue is a Raft log whose
//!    commands (publishes, settlements, requeues) are applied after the channel has answered
//!    and whose passive declare does not wait for them, so its counts and deliveries lag a
//!    little behind (measured: a publish not yet counted by the next probe).
//!
//! Everything seen in the meantime is one step of the trace. Messages are identified by their
//! body (`m<id>;` padded with `.`; an empty body carries the id in the `dt-id` header), so the
//! trace names them `m<id>+<len>` whatever broker carried them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

use crate::client::{Conn, Endpoint, Incoming};
use crate::deliberate;
use crate::program::{
    ConsumerTag, ExchangeName, Key, Op, OpKind, Program, Props, QueueName, Target, FIXED_EXCHANGES,
    FIXED_QUEUES, PREDECLARED,
};
use crate::text::quote;
use crate::trace::{OpTrace, Trace};

/// Timing of a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// How long a synchronous method may wait for its reply.
    pub reply_timeout: Duration,
    /// How long a confirm-mode channel may wait for its confirms.
    pub confirm_timeout: Duration,
    /// The pause after an operation that closes or deletes something (see the module docs).
    pub settle_delay: Duration,
    /// The most settle rounds per step.
    pub max_rounds: usize,
}

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            reply_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(5),
            settle_delay: Duration::from_millis(20),
            max_rounds: 8,
        }
    }
}

/// The channel the runner probes queues on, on the program's own connections (for exclusive
/// queues). Programs use channels 1..=3.
const OWNER_PROBE_CH: u16 = 100;
/// The first channel of the probe connection's pipelined queue probes (one per queue).
const PROBE_BATCH_CH: u16 = 10;
/// The most messages the final sweep reads from one queue.
const FINAL_DRAIN_MAX: usize = 1000;

/// The body of message `id` with `len` bytes (at least the id itself): `m<id>;` then `.`s.
pub fn body_for(id: u32, len: u32) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    let mut b = format!("m{id};").into_bytes();
    if (len as usize) > b.len() {
        b.resize(len as usize, b'.');
    }
    b
}

/// How a message is named in a trace: `m<id>+<len>`, from its body or `dt-id` header.
fn message_name(props: &AMQPProperties, body: &[u8]) -> String {
    if body.is_empty() {
        let id = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("dt-id"))
            .and_then(|v| match v {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| "m?".into());
        return format!("{id}+0");
    }
    let Some(end) = body.iter().position(|&b| b == b';') else {
        return format!("corrupt{}", quote(&body[..body.len().min(20)]));
    };
    let id = String::from_utf8_lossy(&body[..end]).into_owned();
    if body[end + 1..].iter().any(|&b| b != b'.') {
        return format!("{id}+{}(corrupt)", body.len());
    }
    format!("{id}+{}", body.len())
}

/// A close the broker sent (channel or connection).
#[derive(Clone, Debug)]
struct Close {
    code: u16,
    text: String,
    class_id: u16,
    method_id: u16,
}

impl Close {
    fn render(&self, what: &str) -> String {
        // Compared: the code, the code's name at the start of the text (RabbitMQ writes
        // "NOT_FOUND - no queue ..."), and the method that caused it. The rest of the text
        // is prose.
        let name = self
            .text
            .split_once(" - ")
            .map_or(self.text.as_str(), |(name, _)| name);
        let name: String = name.chars().take(40).collect();
        if std::env::var_os("DIFFTEST_FULL_TEXT").is_some() {
            // For investigating: the whole text (then runs of different brokers differ).
            return format!(
                "{what} {} {:?} ({},{})",
                self.code, self.text, self.class_id, self.method_id
            );
        }
        format!(
            "{what} {} {} ({},{})",
            self.code, name, self.class_id, self.method_id
        )
    }
}

/// A reply a waiter receives.
// Consumed at once, one at a time: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Reply {
    /// A method on the channel.
    Method(AMQPClass),
    /// `basic.get-ok` with its content.
    GetOk(basic::GetOk, AMQPProperties, Vec<u8>),
    /// The broker closed the channel.
    ChannelClosed(Close),
}

/// What waiting for a reply came to.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Outcome {
    Reply(Reply),
    /// The connection is gone (closed by the broker, or the socket ended).
    ConnectionGone,
    /// Nothing within the reply timeout.
    Timeout,
}

/// A delivery not acknowledged yet.
#[derive(Clone, Debug)]
struct Outstanding {
    tag: u64,
    message: String,
    /// The consumer tag's symbol, or `get`.
    source: String,
}

/// What the runner knows about one open channel.
#[derive(Debug, Default)]
struct Chan {
    confirm: bool,
    tx: bool,
    next_seq: u64,
    unconfirmed: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    confirm_anomalies: Vec<String>,
    outstanding: Vec<Outstanding>,
    /// Acked/rejected inside a transaction: outstanding again on rollback.
    tx_settled: Vec<Outstanding>,
    last_tag: u64,
    /// Consumer tag (on the wire) → no-ack.
    consumers: HashMap<String, bool>,
    /// Delivery tags of `basic.deliver`s in this step.
    step_tags: BTreeSet<u64>,
}

/// One of the program's connections.
struct ConnState {
    conn: Conn,
    channels: BTreeMap<u16, Chan>,
    /// Replies received but not taken yet, per channel.
    replies: HashMap<u16, VecDeque<Reply>>,
    /// Whether [`OWNER_PROBE_CH`] is open.
    probe_open: bool,
    gone: bool,
}

/// Runs `program` against the broker at `endpoint`, naming everything with `prefix` (which
/// must be unique to this run on that broker). Cleans up what it created. Fails when the
/// broker refused a connection (nothing to compare then).
pub async fn run(
    endpoint: &Endpoint,
    prefix: &str,
    program: &Program,
    config: &RunConfig,
) -> Result<Trace, String> {
    let mut r = Runner {
        endpoint: endpoint.clone(),
        prefix: prefix.to_owned(),
        program,
        config: config.clone(),
        conns: BTreeMap::new(),
        probe: None,
        probe_open: BTreeSet::new(),
        server_queues: Vec::new(),
        server_tags: Vec::new(),
        publishes: 0,
        exclusive_owner: HashMap::new(),
        known_queues: BTreeSet::new(),
        known_exchanges: BTreeSet::new(),
        events: Vec::new(),
        trace: Trace::default(),
        connect_error: None,
        undefined: None,
        closed_by_broker: false,
        e2e_sent: Vec::new(),
        declared_names: BTreeSet::new(),
        quorum: false,
        quorum_names: BTreeSet::new(),
    };
    for op in &program.ops {
        r.step(op).await;
        if r.connect_error.is_some() {
            break;
        }
    }
    if r.connect_error.is_none() {
        r.final_sweep().await;
    }
    r.cleanup().await;
    match r.connect_error {
        Some(e) => Err(format!("{}: {e}", endpoint.addr)),
        None => Ok(r.trace),
    }
}

struct Runner<'p> {
    endpoint: Endpoint,
    prefix: String,
    program: &'p Program,
    config: RunConfig,
    conns: BTreeMap<u8, ConnState>,
    /// The runner's own connection for probes and cleanup (not part of the program).
    probe: Option<Conn>,
    /// Channels open on the probe connection.
    probe_open: BTreeSet<u16>,
    /// Actual names of server-named queues, in order (`sn<k>`).
    server_queues: Vec<String>,
    /// Server-generated consumer tags, in order (`sct<k>`).
    server_tags: Vec<String>,
    /// Publishes so far (the next message id).
    publishes: u32,
    /// Exclusive queue (actual name) → the program connection that declared it.
    exclusive_owner: HashMap<String, u8>,
    known_queues: BTreeSet<QueueName>,
    known_exchanges: BTreeSet<ExchangeName>,
    /// Events of the current step: (group key, line).
    events: Vec<(String, String)>,
    trace: Trace,
    /// Set when the broker refused a connection.
    connect_error: Option<String>,
    /// Set when this step made the rest of the program undefined (see `close_is_racy`).
    undefined: Option<String>,
    /// Set when the broker closed (or lost) a program connection during the current step.
    closed_by_broker: bool,
    /// Every `exchange.bind` between predeclared exchanges sent, as sent (undone at the end).
    e2e_sent: Vec<(String, String, String, FieldTable)>,
    /// Every queue name a `queue.declare` was sent with (deleted at the end).
    declared_names: BTreeSet<String>,
    /// Set once the program sent a declare of a quorum queue: every step pauses from then on
    /// (see the module docs).
    quorum: bool,
    /// The actual names of the quorum queues declared (their consumer counts are not compared:
    /// deliberate D7).
    quorum_names: BTreeSet<String>,
}

impl Runner<'_> {
    // ---- names ----

    fn long_name(&self, tag: &str) -> String {
        let mut n = format!("{}{tag}", self.prefix);
        n.extend(std::iter::repeat_n('x', 255usize.saturating_sub(n.len())));
        n.truncate(255);
        n
    }

    fn queue(&self, q: QueueName) -> String {
        match q {
            QueueName::Fixed(k) => format!("{}q{k}", self.prefix),
            QueueName::Long => self.long_name("qL"),
            QueueName::Server(k) => self
                .server_queues
                .get(usize::from(k))
                .cloned()
                .unwrap_or_else(|| format!("{}sn{k}-never-assigned", self.prefix)),
            QueueName::Empty => String::new(),
            QueueName::Reserved => format!("amq.{}q", self.prefix),
        }
    }

    fn exchange(&self, x: ExchangeName) -> String {
        match x {
            ExchangeName::Fixed(k) => format!("{}e{k}", self.prefix),
            ExchangeName::Long => self.long_name("eL"),
            ExchangeName::Default => String::new(),
            ExchangeName::Amq(i) => PREDECLARED[usize::from(i) % PREDECLARED.len()].to_owned(),
            ExchangeName::Reserved => format!("amq.{}x", self.prefix),
        }
    }

    fn key(&self, k: &Key) -> String {
        match k {
            Key::Lit(s) => s.clone(),
            Key::Queue(q) => self.queue(*q),
        }
    }

    fn consumer_tag(&self, t: ConsumerTag, in_consume: bool) -> String {
        match t {
            ConsumerTag::Fixed(k) => format!("ct{k}"),
            ConsumerTag::Long => {
                let mut s = String::from("ctL");
                s.extend(std::iter::repeat_n('x', 252));
                s
            }
            ConsumerTag::Server(_) if in_consume => String::new(),
            ConsumerTag::Server(k) => self
                .server_tags
                .get(usize::from(k))
                .cloned()
                .unwrap_or_else(|| format!("sct{k}-never-assigned")),
        }
    }

    /// The symbol for a name on the wire, if it is one of the program's.
    fn symbol(&self, bytes: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(bytes).ok()?;
        if let Some(k) = self.server_queues.iter().position(|n| n == s) {
            return Some(format!("sn{k}"));
        }
        if let Some(k) = self.server_tags.iter().position(|n| n == s) {
            return Some(format!("sct{k}"));
        }
        for k in 0..FIXED_QUEUES.max(FIXED_EXCHANGES) + 5 {
            if s == self.queue(QueueName::Fixed(k)) {
                return Some(format!("q{k}"));
            }
            if s == self.exchange(ExchangeName::Fixed(k)) {
                return Some(format!("e{k}"));
            }
        }
        if s == self.queue(QueueName::Long) {
            return Some("qL".into());
        }
        if s == self.exchange(ExchangeName::Long) {
            return Some("eL".into());
        }
        if s == self.queue(QueueName::Reserved) {
            return Some("amq.q".into());
        }
        if s == self.exchange(ExchangeName::Reserved) {
            return Some("amq.x".into());
        }
        if s.len() == 255 && s.starts_with("ctLxxx") {
            return Some("ctL".into());
        }
        if s.contains(&self.prefix) {
            return Some(s.replace(&self.prefix, "<p>"));
        }
        None
    }

    /// A name for the trace: its symbol, or the name quoted.
    fn sym(&self, name: &str) -> String {
        self.symbol(name.as_bytes())
            .unwrap_or_else(|| quote(name.as_bytes()))
    }

    fn render_props(&self, props: &AMQPProperties) -> String {
        let p = deliberate::normalise_props(Props::from_amqp(props));
        p.render(&|b| self.symbol(b))
    }

    // ---- connections and channels ----

    fn chan_mut(&mut self, c: u8, ch: u16) -> Option<&mut Chan> {
        self.conns.get_mut(&c).and_then(|s| s.channels.get_mut(&ch))
    }

    async fn ensure_conn(&mut self, c: u8) -> Result<(), String> {
        if self.conns.get(&c).is_some_and(|s| !s.gone) {
            return Ok(());
        }
        self.forget_conn(c);
        let conn = Conn::open(
            &self.endpoint,
            self.program.frame_max,
            !self.program.no_cancel_notify.contains(&c),
        )
        .await
        .map_err(|e| {
            let text = format!("connect failed: {e}");
            self.connect_error = Some(text.clone());
            text
        })?;
        self.conns.insert(
            c,
            ConnState {
                conn,
                channels: BTreeMap::new(),
                replies: HashMap::new(),
                probe_open: false,
                gone: false,
            },
        );
        Ok(())
    }

    /// Drops what the runner knew about connection `c` (closed or gone).
    fn forget_conn(&mut self, c: u8) {
        self.conns.remove(&c);
        self.exclusive_owner.retain(|_, owner| *owner != c);
    }

    async fn ensure_channel(&mut self, c: u8, ch: u16) -> Result<(), String> {
        self.ensure_conn(c).await?;
        if self.conns[&c].channels.contains_key(&ch) {
            return Ok(());
        }
        let method = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        match self.call(c, ch, method).await {
            Outcome::Reply(Reply::Method(AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) => {
                if let Some(s) = self.conns.get_mut(&c) {
                    s.channels.insert(
                        ch,
                        Chan {
                            next_seq: 1,
                            ..Chan::default()
                        },
                    );
                }
                Ok(())
            }
            other => Err(format!("channel.open: {}", self.render_outcome(other))),
        }
    }

    /// Sends `method` on (c, ch) and waits for the reply.
    async fn call(&mut self, c: u8, ch: u16, method: AMQPClass) -> Outcome {
        let Some(s) = self.conns.get_mut(&c) else {
            return Outcome::ConnectionGone;
        };
        if s.conn.send_method(ch, method).await.is_err() {
            self.conn_gone(c, "write failed");
            return Outcome::ConnectionGone;
        }
        self.wait_reply(c, ch).await
    }

    /// Waits for the next reply on (c, ch), absorbing everything else that arrives.
    async fn wait_reply(&mut self, c: u8, ch: u16) -> Outcome {
        let deadline = Instant::now() + self.config.reply_timeout;
        loop {
            let Some(s) = self.conns.get_mut(&c) else {
                return Outcome::ConnectionGone;
            };
            if let Some(r) = s.replies.get_mut(&ch).and_then(VecDeque::pop_front) {
                return Outcome::Reply(r);
            }
            if s.gone {
                return Outcome::ConnectionGone;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match s.conn.recv(left).await {
                Some(incoming) => self.absorb(c, incoming).await,
                None => return Outcome::Timeout,
            }
        }
    }

    /// Whether RabbitMQ's outcome of connection `c` going away is a race: two or more of its
    /// channels hold consumers or unacked deliveries, one of them unacked deliveries. Its
    /// channel processes then end concurrently, and a message one returns may reach another's
    /// consumer (and be lost there, or come back in either order).
    fn close_is_racy(&self, c: u8) -> bool {
        let Some(s) = self.conns.get(&c) else {
            return false;
        };
        let involved = s
            .channels
            .values()
            .filter(|ch| !ch.consumers.is_empty() || !ch.outstanding.is_empty())
            .count();
        involved >= 2 && s.channels.values().any(|ch| !ch.outstanding.is_empty())
    }

    /// Connection `c` is going away without the runner's doing: when that is a race in
    /// RabbitMQ, the rest of the program is not compared.
    fn note_unplanned_close(&mut self, c: u8) {
        self.closed_by_broker = true;
        if self.undefined.is_none() && self.close_is_racy(c) {
            self.undefined = Some(format!(
                "c{c} closed with unacked deliveries and consumers on different channels: \
                 what RabbitMQ does next is a race, not compared"
            ));
        }
    }

    fn event(&mut self, key: String, line: String) {
        self.events.push((key, line));
    }

    fn conn_gone(&mut self, c: u8, why: &str) {
        self.note_unplanned_close(c);
        if let Some(s) = self.conns.get_mut(&c) {
            if !s.gone {
                s.gone = true;
                s.channels.clear();
                s.replies.clear();
                self.events.push((
                    format!("c{c} ~~~gone"),
                    format!("c{c} connection lost: {why}"),
                ));
            }
        }
    }

    /// Handles one thing the broker sent on connection `c`: replies are queued for their
    /// waiter, everything else becomes an event.
    async fn absorb(&mut self, c: u8, incoming: Incoming) {
        match incoming {
            Incoming::Eof(why) => {
                let already = self.conns.get(&c).is_none_or(|s| s.gone);
                if !already {
                    self.conn_gone(c, &why);
                }
            }
            Incoming::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) => {
                let close = Close {
                    code: close.reply_code,
                    text: close.reply_text.to_string(),
                    class_id: close.class_id,
                    method_id: close.method_id,
                };
                self.event(
                    format!("c{c} ~~~close"),
                    format!("c{c} {}", close.render("connection.close by broker")),
                );
                self.note_unplanned_close(c);
                if let Some(s) = self.conns.get_mut(&c) {
                    let _ = s
                        .conn
                        .send_method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        )
                        .await;
                    s.gone = true;
                    s.channels.clear();
                    // Replies to the settle probes of other channels may have come first.
                    s.replies.clear();
                }
            }
            Incoming::Method(0, m) => {
                if let Some(s) = self.conns.get_mut(&c) {
                    s.replies.entry(0).or_default().push_back(Reply::Method(m));
                }
            }
            Incoming::Method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(close))) => {
                let close = Close {
                    code: close.reply_code,
                    text: close.reply_text.to_string(),
                    class_id: close.class_id,
                    method_id: close.method_id,
                };
                if let Some(s) = self.conns.get_mut(&c) {
                    let _ = s
                        .conn
                        .send_method(
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        )
                        .await;
                    s.channels.remove(&ch);
                    if ch == OWNER_PROBE_CH {
                        s.probe_open = false;
                    }
                    s.replies
                        .entry(ch)
                        .or_default()
                        .push_back(Reply::ChannelClosed(close));
                }
            }
            Incoming::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))) => {
                self.confirm(c, ch, ack.delivery_tag, ack.multiple, true);
            }
            Incoming::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Nack(nack))) => {
                self.confirm(c, ch, nack.delivery_tag, nack.multiple, false);
            }
            Incoming::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel))) => {
                let tag = cancel.consumer_tag.to_string();
                let sym = self.sym(&tag);
                if let Some(chan) = self.conns.get_mut(&c).and_then(|s| s.channels.get_mut(&ch)) {
                    chan.consumers.remove(&tag);
                }
                self.event(
                    format!("c{c}.{ch} {sym}"),
                    format!("c{c}.{ch} {sym} cancelled by broker"),
                );
            }
            Incoming::Method(ch, m) => {
                if let Some(s) = self.conns.get_mut(&c) {
                    s.replies.entry(ch).or_default().push_back(Reply::Method(m));
                }
            }
            Incoming::Content {
                ch,
                method,
                props,
                body,
            } => self.content(c, ch, method, props, body),
        }
    }

    fn confirm(&mut self, c: u8, ch: u16, tag: u64, multiple: bool, ack: bool) {
        let Some(chan) = self.conns.get_mut(&c).and_then(|s| s.channels.get_mut(&ch)) else {
            return;
        };
        let covered: Vec<u64> = if multiple {
            chan.unconfirmed.range(..=tag).copied().collect()
        } else if chan.unconfirmed.contains(&tag) {
            vec![tag]
        } else {
            chan.confirm_anomalies.push(format!(
                "{} of unknown or settled seq {tag}",
                if ack { "ack" } else { "nack" }
            ));
            vec![]
        };
        for seq in covered {
            chan.unconfirmed.remove(&seq);
            if ack {
                chan.acked.insert(seq);
            } else {
                chan.nacked.insert(seq);
            }
        }
    }

    fn content(&mut self, c: u8, ch: u16, method: AMQPClass, props: AMQPProperties, body: Vec<u8>) {
        let message = message_name(&props, &body);
        let rendered_props = self.render_props(&props);
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => {
                let tag_sym = self.sym(d.consumer_tag.as_str());
                let line = format!(
                    "c{c}.{ch} {tag_sym} <- {message}{} ex={} rk={} {rendered_props}",
                    if d.redelivered { " redelivered" } else { "" },
                    self.sym(d.exchange.as_str()),
                    self.sym(d.routing_key.as_str()),
                );
                if let Some(chan) = self.conns.get_mut(&c).and_then(|s| s.channels.get_mut(&ch)) {
                    chan.step_tags.insert(d.delivery_tag);
                    chan.last_tag = chan.last_tag.max(d.delivery_tag);
                    let no_ack = chan
                        .consumers
                        .get(d.consumer_tag.as_str())
                        .copied()
                        .unwrap_or(false);
                    if !no_ack {
                        chan.outstanding.push(Outstanding {
                            tag: d.delivery_tag,
                            message,
                            source: tag_sym.clone(),
                        });
                    }
                }
                self.event(format!("c{c}.{ch} {tag_sym}"), line);
            }
            AMQPClass::Basic(basic::AMQPMethod::Return(r)) => {
                let line = format!(
                    "c{c}.{ch} return {} {} ex={} rk={} {message} {rendered_props}",
                    r.reply_code,
                    r.reply_text
                        .as_str()
                        .split_once(" - ")
                        .map_or(r.reply_text.as_str(), |(n, _)| n),
                    self.sym(r.exchange.as_str()),
                    self.sym(r.routing_key.as_str()),
                );
                self.event(format!("c{c}.{ch} ~return"), line);
            }
            AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => {
                if let Some(s) = self.conns.get_mut(&c) {
                    s.replies
                        .entry(ch)
                        .or_default()
                        .push_back(Reply::GetOk(g, props, body));
                }
            }
            other => {
                self.event(
                    format!("c{c}.{ch} ~other"),
                    format!("c{c}.{ch} unexpected content with {other:?}"),
                );
            }
        }
    }

    fn render_outcome(&self, outcome: Outcome) -> String {
        match outcome {
            Outcome::Reply(Reply::Method(m)) => method_name(&m),
            Outcome::Reply(Reply::GetOk(..)) => "basic.get-ok".into(),
            Outcome::Reply(Reply::ChannelClosed(close)) => close.render("channel.close"),
            Outcome::ConnectionGone => "connection closed".into(),
            Outcome::Timeout => format!("no reply within {:?}", self.config.reply_timeout),
        }
    }

    // ---- one step ----

    async fn step(&mut self, op: &Op) {
        self.events.clear();
        self.closed_by_broker = false;
        // Whether closing this channel would make RabbitMQ clean up asynchronously (consumers
        // of auto-delete queues, unacked messages, exclusive queues of the connection).
        let had_state = self
            .conns
            .get(&op.conn)
            .and_then(|s| s.channels.get(&op.ch))
            .is_some_and(|c| !c.consumers.is_empty() || !c.outstanding.is_empty())
            || self.exclusive_owner.values().any(|c| *c == op.conn);
        let reply = match self.execute(op).await {
            Ok(reply) => reply,
            Err(e) => e,
        };
        self.quorum |= declares_quorum(&op.kind);
        let paused = self.quorum || disturbs(&op.kind) || (had_state && reply.contains("close"));
        if paused {
            tokio::time::sleep(self.config.settle_delay).await;
        }
        let mut queues = self.settle().await;
        if self.closed_by_broker && !paused {
            // The broker closed a connection on its own during the step (an error on another
            // channel, an asynchronous 540...): RabbitMQ drops that connection's exclusive
            // queues and requeues its deliveries after close-ok, asynchronously, so the same
            // pause as after a close the program sent, then settle again.
            tokio::time::sleep(self.config.settle_delay).await;
            queues = self.settle().await;
        }
        let events = std::mem::take(&mut self.events);
        self.trace.ops.push(OpTrace {
            op: op.to_string(),
            reply,
            events,
            queues,
            undefined: self.undefined.take(),
        });
    }

    async fn execute(&mut self, op: &Op) -> Result<String, String> {
        let (c, ch) = (op.conn, op.ch);
        if let OpKind::ConnectionClose = op.kind {
            if self.conns.get(&c).is_none_or(|s| s.gone) {
                // Opens the connection first, so that the close is observable.
                self.ensure_conn(c).await?;
            }
            if self.close_is_racy(c) {
                // What RabbitMQ does when such a connection closes is a race (see
                // `close_is_racy`); closing its channels one by one first is not.
                let chans: Vec<u16> = self
                    .conns
                    .get(&c)
                    .map(|s| s.channels.keys().copied().collect())
                    .unwrap_or_default();
                for ch in chans {
                    let close = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                        reply_code: 200,
                        reply_text: "bye".into(),
                        class_id: 0,
                        method_id: 0,
                    }));
                    let _ = self.call(c, ch, close).await;
                    if let Some(s) = self.conns.get_mut(&c) {
                        s.channels.remove(&ch);
                    }
                }
            }
            let method = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            }));
            let outcome = self.call(c, 0, method).await;
            let text = self.render_outcome(outcome);
            self.forget_conn(c);
            return Ok(text);
        }
        self.ensure_channel(c, ch).await?;
        let sync = |m: AMQPClass| Some(m);
        let method: Option<AMQPClass> = match &op.kind {
            OpKind::ExchangeDeclare {
                x,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                args,
            } => {
                self.known_exchanges.insert(*x);
                sync(AMQPClass::Exchange(exchange::AMQPMethod::Declare(
                    exchange::Declare {
                        exchange: self.exchange(*x).into(),
                        kind: kind.as_str().into(),
                        passive: *passive,
                        durable: *durable,
                        auto_delete: *auto_delete,
                        internal: *internal,
                        nowait: false,
                        arguments: self.table(args),
                    },
                )))
            }
            OpKind::ExchangeDelete { x, if_unused } => sync(AMQPClass::Exchange(
                exchange::AMQPMethod::Delete(exchange::Delete {
                    exchange: self.exchange(*x).into(),
                    if_unused: *if_unused,
                    nowait: false,
                }),
            )),
            OpKind::ExchangeBind {
                dest,
                src,
                key,
                args,
            } => {
                let sent = (
                    self.exchange(*dest),
                    self.exchange(*src),
                    self.key(key),
                    self.table(args),
                );
                if matches!((dest, src), (ExchangeName::Amq(_), ExchangeName::Amq(_))) {
                    self.e2e_sent.push(sent.clone());
                }
                sync(AMQPClass::Exchange(exchange::AMQPMethod::Bind(
                    exchange::Bind {
                        destination: sent.0.into(),
                        source: sent.1.into(),
                        routing_key: sent.2.into(),
                        nowait: false,
                        arguments: sent.3,
                    },
                )))
            }
            OpKind::ExchangeUnbind {
                dest,
                src,
                key,
                args,
            } => sync(AMQPClass::Exchange(exchange::AMQPMethod::Unbind(
                exchange::Unbind {
                    destination: self.exchange(*dest).into(),
                    source: self.exchange(*src).into(),
                    routing_key: self.key(key).into(),
                    nowait: false,
                    arguments: self.table(args),
                },
            ))),
            OpKind::QueueDeclare {
                q,
                passive,
                durable,
                exclusive,
                auto_delete,
                args,
            } => {
                if !matches!(q, QueueName::Empty) {
                    self.known_queues.insert(*q);
                    self.declared_names.insert(self.queue(*q));
                }
                sync(AMQPClass::Queue(queue::AMQPMethod::Declare(
                    queue::Declare {
                        queue: self.queue(*q).into(),
                        passive: *passive,
                        durable: *durable,
                        exclusive: *exclusive,
                        auto_delete: *auto_delete,
                        nowait: false,
                        arguments: self.table(args),
                    },
                )))
            }
            OpKind::QueueBind { q, x, key, args } => {
                sync(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: self.queue(*q).into(),
                    exchange: self.exchange(*x).into(),
                    routing_key: self.key(key).into(),
                    nowait: false,
                    arguments: self.table(args),
                })))
            }
            OpKind::QueueUnbind { q, x, key, args } => {
                sync(AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: self.queue(*q).into(),
                    exchange: self.exchange(*x).into(),
                    routing_key: self.key(key).into(),
                    arguments: self.table(args),
                })))
            }
            OpKind::QueuePurge { q } => {
                sync(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                    queue: self.queue(*q).into(),
                    nowait: false,
                })))
            }
            OpKind::QueueDelete {
                q,
                if_unused,
                if_empty,
            } => sync(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: self.queue(*q).into(),
                if_unused: *if_unused,
                if_empty: *if_empty,
                nowait: false,
            }))),
            OpKind::Publish {
                x,
                key,
                mandatory,
                immediate,
                props,
                body,
            } => {
                let id = self.publishes;
                self.publishes += 1;
                let mut amqp_props = props.to_amqp();
                if *body == 0 {
                    let mut h = props.headers.clone().unwrap_or_default();
                    h.insert(
                        "dt-id".into(),
                        AMQPValue::LongString(LongString::from(format!("m{id}"))),
                    );
                    amqp_props = amqp_props.with_headers(h);
                }
                let publish = basic::Publish {
                    exchange: self.exchange(*x).into(),
                    routing_key: self.key(key).into(),
                    mandatory: *mandatory,
                    immediate: *immediate,
                };
                let bytes = body_for(id, *body);
                let s = self.conns.get_mut(&c).ok_or("connection gone")?;
                if let Some(chan) = s.channels.get_mut(&ch) {
                    if chan.confirm {
                        chan.unconfirmed.insert(chan.next_seq);
                        chan.next_seq += 1;
                    }
                }
                if s.conn
                    .publish(ch, publish, amqp_props, &bytes)
                    .await
                    .is_err()
                {
                    self.conn_gone(c, "write failed");
                }
                return Ok(format!("sent m{id}"));
            }
            OpKind::Get { q, no_ack } => {
                sync(AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                    queue: self.queue(*q).into(),
                    no_ack: *no_ack,
                })))
            }
            OpKind::Consume {
                q,
                tag,
                no_ack,
                exclusive,
                args,
            } => sync(AMQPClass::Basic(basic::AMQPMethod::Consume(
                basic::Consume {
                    queue: self.queue(*q).into(),
                    consumer_tag: self.consumer_tag(*tag, true).into(),
                    no_local: false,
                    no_ack: *no_ack,
                    exclusive: *exclusive,
                    nowait: false,
                    arguments: self.table(args),
                },
            ))),
            OpKind::Cancel { tag } => {
                sync(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: self.consumer_tag(*tag, false).into(),
                    nowait: false,
                })))
            }
            OpKind::Ack { target, multiple } => {
                let tag = self.settle_deliveries(c, ch, *target, *multiple);
                let m = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: tag,
                    multiple: *multiple,
                }));
                return self.send_async(c, ch, m, format!("sent tag {tag}")).await;
            }
            OpKind::Nack {
                target,
                multiple,
                requeue,
            } => {
                let tag = self.settle_deliveries(c, ch, *target, *multiple);
                let m = AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag: tag,
                    multiple: *multiple,
                    requeue: *requeue,
                }));
                return self.send_async(c, ch, m, format!("sent tag {tag}")).await;
            }
            OpKind::Reject { target, requeue } => {
                let tag = self.settle_deliveries(c, ch, *target, false);
                let m = AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                    delivery_tag: tag,
                    requeue: *requeue,
                }));
                return self.send_async(c, ch, m, format!("sent tag {tag}")).await;
            }
            OpKind::Qos {
                prefetch_count,
                global,
            } => sync(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: *prefetch_count,
                global: *global,
            }))),
            OpKind::Recover { requeue } => sync(AMQPClass::Basic(basic::AMQPMethod::Recover(
                basic::Recover { requeue: *requeue },
            ))),
            OpKind::ConfirmSelect => sync(AMQPClass::Confirm(confirm::AMQPMethod::Select(
                confirm::Select { nowait: false },
            ))),
            OpKind::TxSelect => sync(AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))),
            OpKind::TxCommit => sync(AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))),
            OpKind::TxRollback => sync(AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}))),
            OpKind::ChannelClose => sync(AMQPClass::Channel(channel::AMQPMethod::Close(
                channel::Close {
                    reply_code: 200,
                    reply_text: "bye".into(),
                    class_id: 0,
                    method_id: 0,
                },
            ))),
            OpKind::ConnectionClose => None,
        };
        let Some(method) = method else {
            return Ok(String::new());
        };
        let outcome = self.call(c, ch, method).await;
        Ok(self.interpret(op, outcome))
    }

    async fn send_async(
        &mut self,
        c: u8,
        ch: u16,
        method: AMQPClass,
        text: String,
    ) -> Result<String, String> {
        let s = self.conns.get_mut(&c).ok_or("connection gone")?;
        if s.conn.send_method(ch, method).await.is_err() {
            self.conn_gone(c, "write failed");
        }
        Ok(text)
    }

    /// The delivery tag `target` names on (c, ch), and the runner's bookkeeping of what the
    /// ack/nack/reject settles.
    fn settle_deliveries(&mut self, c: u8, ch: u16, target: Target, multiple: bool) -> u64 {
        let Some(chan) = self.conns.get_mut(&c).and_then(|s| s.channels.get_mut(&ch)) else {
            return 0;
        };
        let tag = match target {
            Target::Outstanding(k) => {
                let mut sorted = chan.outstanding.clone();
                sorted.sort_by(|a, b| {
                    (&a.message, &a.source, a.tag).cmp(&(&b.message, &b.source, b.tag))
                });
                match sorted.get(usize::from(k) % sorted.len().max(1)) {
                    Some(o) => o.tag,
                    None => chan.last_tag + 1000,
                }
            }
            Target::Latest => chan.last_tag,
            Target::Zero => 0,
            Target::Unknown => chan.last_tag + 1000,
        };
        let settled: Vec<Outstanding> = if multiple {
            let (settled, kept) = chan
                .outstanding
                .drain(..)
                .partition(|o| tag == 0 || o.tag <= tag);
            chan.outstanding = kept;
            settled
        } else {
            let (settled, kept) = chan.outstanding.drain(..).partition(|o| o.tag == tag);
            chan.outstanding = kept;
            settled
        };
        if chan.tx {
            chan.tx_settled.extend(settled);
        }
        tag
    }

    fn table(&self, args: &FieldTable) -> FieldTable {
        // Arguments naming the program's queues or exchanges (dead-letter exchange, alternate
        // exchange) carry symbols in the program; give them their run's names.
        let mut out = FieldTable::default();
        for (k, v) in args {
            let v = match (k.as_str(), v) {
                ("x-dead-letter-exchange" | "alternate-exchange", AMQPValue::LongString(s)) => {
                    AMQPValue::LongString(LongString::from(self.resolve_symbol(s.as_bytes())))
                }
                ("x-dead-letter-routing-key", AMQPValue::LongString(s)) => {
                    AMQPValue::LongString(LongString::from(self.resolve_symbol(s.as_bytes())))
                }
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        out
    }

    /// `e1` → the run's name of e1 (also q<k>, eL, qL, sn<k>); anything else unchanged.
    fn resolve_symbol(&self, s: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(s) else {
            return s.to_vec();
        };
        let num = |p: &str| text.strip_prefix(p).and_then(|n| n.parse::<u8>().ok());
        let name = if text == "eL" {
            self.exchange(ExchangeName::Long)
        } else if text == "qL" {
            self.queue(QueueName::Long)
        } else if let Some(k) = num("sn") {
            self.queue(QueueName::Server(k))
        } else if let Some(k) = num("e") {
            self.exchange(ExchangeName::Fixed(k))
        } else if let Some(k) = num("q") {
            self.queue(QueueName::Fixed(k))
        } else {
            return s.to_vec();
        };
        name.into_bytes()
    }

    /// Renders the reply of a synchronous operation and updates the runner's bookkeeping.
    fn interpret(&mut self, op: &Op, outcome: Outcome) -> String {
        let (c, ch) = (op.conn, op.ch);
        let reply = match outcome {
            Outcome::Reply(r) => r,
            other => return self.render_outcome(other),
        };
        match (&op.kind, reply) {
            (_, Reply::ChannelClosed(close)) => close.render("channel.close"),
            (
                OpKind::QueueDeclare {
                    q,
                    passive,
                    exclusive,
                    ..
                },
                Reply::Method(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))),
            ) => {
                let name = ok.queue.to_string();
                if matches!(q, QueueName::Empty) && !passive && !self.server_queues.contains(&name)
                {
                    self.server_queues.push(name.clone());
                    self.known_queues
                        .insert(QueueName::Server((self.server_queues.len() - 1) as u8));
                }
                if *exclusive && !passive {
                    self.exclusive_owner.insert(name.clone(), c);
                }
                if !passive {
                    if declares_quorum(&op.kind) {
                        self.quorum_names.insert(name.clone());
                    } else {
                        self.quorum_names.remove(&name);
                    }
                }
                format!(
                    "queue.declare-ok {} {}",
                    self.sym(&name),
                    self.counts(&name, ok.message_count, ok.consumer_count)
                )
            }
            (_, Reply::Method(AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)))) => {
                format!("queue.purge-ok {}", ok.message_count)
            }
            (_, Reply::Method(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)))) => {
                format!("queue.delete-ok {}", ok.message_count)
            }
            (
                OpKind::Consume { tag, no_ack, .. },
                Reply::Method(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))),
            ) => {
                let actual = ok.consumer_tag.to_string();
                if matches!(tag, ConsumerTag::Server(_)) && !self.server_tags.contains(&actual) {
                    self.server_tags.push(actual.clone());
                }
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.consumers.insert(actual.clone(), *no_ack);
                }
                format!("basic.consume-ok {}", self.sym(&actual))
            }
            (
                OpKind::Cancel { .. },
                Reply::Method(AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok))),
            ) => {
                let actual = ok.consumer_tag.to_string();
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.consumers.remove(&actual);
                }
                format!("basic.cancel-ok {}", self.sym(&actual))
            }
            (OpKind::Get { no_ack, .. }, Reply::GetOk(g, props, body)) => {
                let message = message_name(&props, &body);
                let props = self.render_props(&props);
                let line = format!(
                    "basic.get-ok tag={} {message}{} ex={} rk={} left={} {props}",
                    g.delivery_tag,
                    if g.redelivered { " redelivered" } else { "" },
                    self.sym(g.exchange.as_str()),
                    self.sym(g.routing_key.as_str()),
                    g.message_count,
                );
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.last_tag = chan.last_tag.max(g.delivery_tag);
                    if !no_ack {
                        chan.outstanding.push(Outstanding {
                            tag: g.delivery_tag,
                            message,
                            source: "get".into(),
                        });
                    }
                }
                line
            }
            (
                OpKind::Recover { requeue: true },
                Reply::Method(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_))),
            ) => {
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.outstanding.clear();
                }
                "basic.recover-ok".into()
            }
            (
                OpKind::ConfirmSelect,
                Reply::Method(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
            ) => {
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.confirm = true;
                }
                "confirm.select-ok".into()
            }
            (OpKind::TxSelect, Reply::Method(AMQPClass::Tx(tx::AMQPMethod::SelectOk(_)))) => {
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.tx = true;
                }
                "tx.select-ok".into()
            }
            (OpKind::TxCommit, Reply::Method(AMQPClass::Tx(tx::AMQPMethod::CommitOk(_)))) => {
                if let Some(chan) = self.chan_mut(c, ch) {
                    chan.tx_settled.clear();
                }
                "tx.commit-ok".into()
            }
            (OpKind::TxRollback, Reply::Method(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(_)))) => {
                if let Some(chan) = self.chan_mut(c, ch) {
                    let back = std::mem::take(&mut chan.tx_settled);
                    chan.outstanding.extend(back);
                }
                "tx.rollback-ok".into()
            }
            (
                OpKind::ChannelClose,
                Reply::Method(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))),
            ) => {
                if let Some(s) = self.conns.get_mut(&c) {
                    s.channels.remove(&ch);
                }
                "channel.close-ok".into()
            }
            (_, Reply::Method(m)) => method_name(&m),
            (_, Reply::GetOk(..)) => "unexpected basic.get-ok".into(),
        }
    }

    // ---- settling and observing ----

    /// Lets the broker settle (see the module docs); returns the queue states.
    async fn settle(&mut self) -> String {
        let mut previous: Option<String> = None;
        for round in 0..self.config.max_rounds {
            let before = self.events.len();
            self.flush_channels().await;
            let states = self.probe_queues().await;
            if round >= 1 && self.events.len() == before && previous.as_ref() == Some(&states) {
                self.close_step();
                return states;
            }
            previous = Some(states);
            if round >= 2 {
                tokio::time::sleep(Duration::from_millis(5 * round as u64)).await;
            }
        }
        self.close_step();
        format!("{} (unsettled)", previous.unwrap_or_default())
    }

    /// Turns the step's per-channel bookkeeping (tags, confirms) into events.
    fn close_step(&mut self) {
        let mut lines = Vec::new();
        for (c, s) in self.conns.iter_mut() {
            for (ch, chan) in s.channels.iter_mut() {
                if !chan.step_tags.is_empty() {
                    lines.push((
                        format!("c{c}.{ch} ~tags"),
                        format!("c{c}.{ch} tags {}", ranges(&chan.step_tags)),
                    ));
                    chan.step_tags.clear();
                }
                if !chan.acked.is_empty() || !chan.nacked.is_empty() {
                    lines.push((
                        format!("c{c}.{ch} ~confirms"),
                        format!(
                            "c{c}.{ch} confirms ack={} nack={}",
                            ranges(&chan.acked),
                            ranges(&chan.nacked)
                        ),
                    ));
                    chan.acked.clear();
                    chan.nacked.clear();
                }
                for a in chan.confirm_anomalies.drain(..) {
                    lines.push((format!("c{c}.{ch} ~confirms"), format!("c{c}.{ch} {a}")));
                }
                if !chan.unconfirmed.is_empty() {
                    lines.push((
                        format!("c{c}.{ch} ~confirms"),
                        format!("c{c}.{ch} unconfirmed {}", ranges(&chan.unconfirmed)),
                    ));
                }
            }
            for (ch, replies) in s.replies.iter_mut() {
                for r in replies.drain(..) {
                    let text = match r {
                        Reply::Method(m) => method_name(&m),
                        Reply::GetOk(..) => "basic.get-ok".into(),
                        Reply::ChannelClosed(close) => close.render("channel.close by broker"),
                    };
                    lines.push((format!("c{c}.{ch} ~~close"), format!("c{c}.{ch} {text}")));
                }
            }
        }
        self.events.extend(lines);
    }

    /// Step 1 of settling: a no-op round trip on every open program channel, then the
    /// confirms of confirm-mode channels.
    async fn flush_channels(&mut self) {
        // All probes first (every connection), then the replies: one round trip in all.
        let mut sent: Vec<(u8, Vec<u16>)> = Vec::new();
        let conns: Vec<u8> = self.conns.keys().copied().collect();
        for &c in &conns {
            let Some(s) = self.conns.get_mut(&c) else {
                continue;
            };
            if s.gone {
                continue;
            }
            let chans: Vec<u16> = s.channels.keys().copied().collect();
            let probes = chans
                .iter()
                .map(|&ch| {
                    (
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                            exchange: "amq.direct".into(),
                            kind: "direct".into(),
                            passive: true,
                            durable: false,
                            auto_delete: false,
                            internal: false,
                            nowait: false,
                            arguments: FieldTable::default(),
                        })),
                    )
                })
                .collect();
            if s.conn.send_methods(probes).await.is_err() {
                self.conn_gone(c, "write failed");
                continue;
            }
            sent.push((c, chans));
        }
        for (c, chans) in sent {
            for ch in chans {
                match self.wait_reply(c, ch).await {
                    Outcome::Reply(Reply::Method(AMQPClass::Exchange(
                        exchange::AMQPMethod::DeclareOk(_),
                    ))) => {}
                    Outcome::Reply(Reply::ChannelClosed(close)) => {
                        self.event(
                            format!("c{c}.{ch} ~~close"),
                            format!("c{c}.{ch} {}", close.render("channel.close by broker")),
                        );
                    }
                    Outcome::Reply(other) => {
                        let text = match other {
                            Reply::Method(m) => method_name(&m),
                            _ => "basic.get-ok".into(),
                        };
                        self.event(
                            format!("c{c}.{ch} ~other"),
                            format!("c{c}.{ch} unexpected {text}"),
                        );
                    }
                    Outcome::ConnectionGone => break,
                    Outcome::Timeout => {
                        self.event(
                            format!("c{c}.{ch} ~other"),
                            format!("c{c}.{ch} no reply to a passive exchange.declare"),
                        );
                        self.conn_gone(c, "unresponsive");
                        break;
                    }
                }
            }
            self.await_confirms(c).await;
        }
    }

    async fn await_confirms(&mut self, c: u8) {
        let deadline = Instant::now() + self.config.confirm_timeout;
        loop {
            let Some(s) = self.conns.get_mut(&c) else {
                return;
            };
            if s.gone || s.channels.values().all(|ch| ch.unconfirmed.is_empty()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match s.conn.recv(left).await {
                Some(incoming) => self.absorb(c, incoming).await,
                None => return,
            }
        }
    }

    async fn probe_conn(&mut self) -> Option<&mut Conn> {
        if self.probe.as_ref().is_none_or(|p| p.eof) {
            self.probe_open.clear();
            self.probe = Conn::open(&self.endpoint, 131_072, true).await.ok();
        }
        self.probe.as_mut()
    }

    /// Step 2 of settling: a passive declare of every queue the program declared.
    /// A queue's counts as the trace shows them: `ready/consumers`, or `ready/*` for a quorum
    /// queue, whose consumer count RabbitMQ keeps its own way (deliberate D7).
    fn counts(&self, name: &str, messages: u32, consumers: u32) -> String {
        if self.quorum_names.contains(name) {
            format!("{messages}/*")
        } else {
            format!("{messages}/{consumers}")
        }
    }

    async fn probe_queues(&mut self) -> String {
        let queues: Vec<QueueName> = self.known_queues.iter().copied().collect();
        let mut states: Vec<Option<String>> = vec![None; queues.len()];
        // Exclusive queues of a live connection: from the owner, one at a time (rare).
        let mut batch = Vec::new();
        for (i, q) in queues.iter().enumerate() {
            let name = self.queue(*q);
            match self.exclusive_owner.get(&name).copied() {
                Some(c) if self.conns.get(&c).is_some_and(|s| !s.gone) => {
                    states[i] = Some(match self.passive_declare(&name).await {
                        Ok((messages, consumers)) => self.counts(&name, messages, consumers),
                        Err(e) => e,
                    });
                }
                _ => batch.push((i, name)),
            }
        }
        // The others: pipelined on the probe connection, one channel per queue.
        for (i, result) in self.probe_batch(&batch).await {
            states[i] = Some(match result {
                Ok((messages, consumers)) => {
                    self.counts(&batch_name(&batch, i), messages, consumers)
                }
                Err(e) => e,
            });
        }
        queues
            .iter()
            .zip(states)
            .map(|(q, s)| format!("{q}={}", s.unwrap_or_else(|| "no reply".into())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Passive declares of `(index, name)` on the probe connection, all sent at once (channel
    /// `PROBE_BATCH_CH + index`, opened first where needed); `(index, result)` per name.
    async fn probe_batch(
        &mut self,
        batch: &[(usize, String)],
    ) -> Vec<(usize, Result<(u32, u32), String>)> {
        let timeout = self.config.reply_timeout;
        if batch.is_empty() || self.probe_conn().await.is_none() {
            return batch
                .iter()
                .map(|(i, _)| (*i, Err("no probe connection".to_owned())))
                .collect();
        }
        let mut frames = Vec::new();
        // Channel → (index, still waiting for open-ok).
        let mut waiting: HashMap<u16, (usize, bool)> = HashMap::new();
        for (i, name) in batch {
            let ch = PROBE_BATCH_CH + *i as u16;
            let needs_open = !self.probe_open.contains(&ch);
            if needs_open {
                frames.push((
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
                ));
            }
            frames.push((
                ch,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: name.as_str().into(),
                    passive: true,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            ));
            waiting.insert(ch, (*i, needs_open));
        }
        let mut out = Vec::with_capacity(batch.len());
        let Some(conn) = self.probe.as_mut() else {
            return out;
        };
        if conn.send_methods(frames).await.is_err() {
            return out;
        }
        let deadline = Instant::now() + timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(incoming) = conn.recv(left).await else {
                break;
            };
            match incoming {
                Incoming::Method(ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => {
                    if let Some(w) = waiting.get_mut(&ch) {
                        w.1 = false;
                        self.probe_open.insert(ch);
                    }
                }
                Incoming::Method(ch, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => {
                    if let Some((i, _)) = waiting.remove(&ch) {
                        out.push((i, Ok((ok.message_count, ok.consumer_count))));
                    }
                }
                Incoming::Method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(close))) => {
                    let _ = conn
                        .send_method(
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        )
                        .await;
                    self.probe_open.remove(&ch);
                    if let Some((i, _)) = waiting.remove(&ch) {
                        out.push((i, Err(close.reply_code.to_string())));
                    }
                }
                Incoming::Eof(_) => break,
                _ => {}
            }
        }
        out
    }

    /// A passive queue.declare of `name` from its owner's connection when it is exclusive,
    /// from the probe connection otherwise: `(messages, consumers)` or the reply code.
    async fn passive_declare(&mut self, name: &str) -> Result<(u32, u32), String> {
        let method = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        let reply = match self.exclusive_owner.get(name).copied() {
            Some(c) if self.conns.get(&c).is_some_and(|s| !s.gone) => {
                self.owner_call(c, method).await
            }
            _ => self.probe_call(method).await,
        };
        match reply {
            Some(Reply::Method(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))) => {
                Ok((ok.message_count, ok.consumer_count))
            }
            Some(Reply::ChannelClosed(close)) => Err(close.code.to_string()),
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("no reply".into()),
        }
    }

    /// A call on the owner connection's probe channel.
    async fn owner_call(&mut self, c: u8, method: AMQPClass) -> Option<Reply> {
        let s = self.conns.get_mut(&c)?;
        if !s.probe_open {
            let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
            if s.conn.send_method(OWNER_PROBE_CH, open).await.is_err() {
                return None;
            }
            match self.wait_reply(c, OWNER_PROBE_CH).await {
                Outcome::Reply(Reply::Method(AMQPClass::Channel(channel::AMQPMethod::OpenOk(
                    _,
                )))) => {}
                _ => return None,
            }
            self.conns.get_mut(&c)?.probe_open = true;
        }
        let s = self.conns.get_mut(&c)?;
        if s.conn.send_method(OWNER_PROBE_CH, method).await.is_err() {
            return None;
        }
        match self.wait_reply(c, OWNER_PROBE_CH).await {
            Outcome::Reply(r) => Some(r),
            _ => None,
        }
    }

    /// A call on the probe connection (channel 1, reopened after a close).
    async fn probe_call(&mut self, method: AMQPClass) -> Option<Reply> {
        let timeout = self.config.reply_timeout;
        let needs_open = !self.probe_open.contains(&1) || self.probe.as_ref().is_none_or(|p| p.eof);
        let conn = self.probe_conn().await?;
        if needs_open || conn.eof {
            let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
            conn.send_method(1, open).await.ok()?;
            match probe_reply(conn, 1, timeout).await? {
                Reply::Method(AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => {}
                _ => return None,
            }
            self.probe_open.insert(1);
        }
        let conn = self.probe.as_mut()?;
        conn.send_method(1, method).await.ok()?;
        let reply = probe_reply(conn, 1, timeout).await;
        if matches!(reply, Some(Reply::ChannelClosed(_)) | None) {
            self.probe_open.remove(&1);
        }
        reply
    }

    /// The final state: every queue's remaining messages, in order, and which exchanges exist.
    async fn final_sweep(&mut self) {
        let queues: Vec<QueueName> = self.known_queues.iter().copied().collect();
        for q in queues {
            let name = self.queue(q);
            let mut lines = Vec::new();
            for i in 0..FINAL_DRAIN_MAX {
                let method = AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                    queue: name.as_str().into(),
                    no_ack: true,
                }));
                let reply = match self.exclusive_owner.get(&name).copied() {
                    Some(c) if self.conns.get(&c).is_some_and(|s| !s.gone) => {
                        self.owner_call(c, method).await
                    }
                    _ => self.probe_call(method).await,
                };
                match reply {
                    Some(Reply::GetOk(g, props, body)) => lines.push(format!(
                        "{q} #{i} {}{} ex={} rk={} {}",
                        message_name(&props, &body),
                        if g.redelivered { " redelivered" } else { "" },
                        self.sym(g.exchange.as_str()),
                        self.sym(g.routing_key.as_str()),
                        self.render_props(&props)
                    )),
                    Some(Reply::Method(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)))) => {
                        lines.push(format!("{q} empty after {i}"));
                        break;
                    }
                    Some(Reply::ChannelClosed(close)) => {
                        lines.push(format!("{q} {}", close.code));
                        break;
                    }
                    other => {
                        lines.push(format!("{q} unexpected {other:?}"));
                        break;
                    }
                }
            }
            self.trace.end.extend(lines);
        }
        let exchanges: Vec<ExchangeName> = self.known_exchanges.iter().copied().collect();
        let mut present = Vec::new();
        for x in exchanges {
            let method = AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: self.exchange(x).into(),
                kind: "direct".into(),
                passive: true,
                durable: false,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            }));
            let state = match self.probe_call(method).await {
                Some(Reply::Method(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)))) => {
                    "exists".to_owned()
                }
                Some(Reply::ChannelClosed(close)) => close.code.to_string(),
                other => format!("unexpected {other:?}"),
            };
            present.push(format!("{x}={state}"));
        }
        let present = if present.is_empty() {
            "-".to_owned()
        } else {
            present.join(" ")
        };
        self.trace.end.push(format!("exchanges: {present}"));
    }

    /// Closes the program's connections and deletes every queue and exchange it may have
    /// created. Outcomes are not part of the trace.
    async fn cleanup(&mut self) {
        let conns: Vec<u8> = self.conns.keys().copied().collect();
        for c in conns {
            if let Some(mut s) = self.conns.remove(&c) {
                if !s.gone {
                    let _ = s
                        .conn
                        .send_method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::Close(
                                connection::Close {
                                    reply_code: 200,
                                    reply_text: "done".into(),
                                    class_id: 0,
                                    method_id: 0,
                                },
                            )),
                        )
                        .await;
                    // Waits for close-ok (or anything) so the close is processed before the
                    // deletes below.
                    let _ = s.conn.recv(Duration::from_millis(500)).await;
                }
            }
        }
        self.exclusive_owner.clear();
        // Bindings between predeclared exchanges outlive the run (RabbitMQ keeps them, they
        // are durable): take back every one the program may have made, exactly as sent (a
        // key naming a server-named queue may name another one by now).
        for (destination, source, routing_key, arguments) in std::mem::take(&mut self.e2e_sent) {
            let unbind = AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                destination: destination.into(),
                source: source.into(),
                routing_key: routing_key.into(),
                nowait: false,
                arguments,
            }));
            let _ = self.probe_call(unbind).await;
        }
        // Every name a declare was sent with (`sn0` may have named a queue before the first
        // server-named one existed), and the server-named ones.
        let mut names = std::mem::take(&mut self.declared_names);
        names.extend(self.server_queues.iter().cloned());
        for name in names {
            let _ = self
                .probe_call(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                    queue: name.into(),
                    if_unused: false,
                    if_empty: false,
                    nowait: false,
                })))
                .await;
        }
        let exchanges: Vec<ExchangeName> = self.known_exchanges.iter().copied().collect();
        for x in exchanges {
            if matches!(x, ExchangeName::Amq(_) | ExchangeName::Default) {
                continue;
            }
            let name = self.exchange(x);
            let _ = self
                .probe_call(AMQPClass::Exchange(exchange::AMQPMethod::Delete(
                    exchange::Delete {
                        exchange: name.into(),
                        if_unused: false,
                        nowait: false,
                    },
                )))
                .await;
        }
        if let Some(mut p) = self.probe.take() {
            let _ = p
                .send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                        reply_code: 200,
                        reply_text: "done".into(),
                        class_id: 0,
                        method_id: 0,
                    })),
                )
                .await;
            let _ = p.recv(Duration::from_millis(500)).await;
        }
    }
}

/// Waits for the reply on channel `ch` of the probe connection; answers a channel.close.
async fn probe_reply(conn: &mut Conn, ch: u16, timeout: Duration) -> Option<Reply> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv(left).await? {
            Incoming::Method(c, AMQPClass::Channel(channel::AMQPMethod::Close(close)))
                if c == ch =>
            {
                let _ = conn
                    .send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    )
                    .await;
                return Some(Reply::ChannelClosed(Close {
                    code: close.reply_code,
                    text: close.reply_text.to_string(),
                    class_id: close.class_id,
                    method_id: close.method_id,
                }));
            }
            Incoming::Method(c, m) if c == ch => return Some(Reply::Method(m)),
            Incoming::Content {
                ch: c,
                method: AMQPClass::Basic(basic::AMQPMethod::GetOk(g)),
                props,
                body,
            } if c == ch => return Some(Reply::GetOk(g, props, body)),
            Incoming::Eof(_) => return None,
            _ => continue,
        }
    }
}

/// The name probed at `index` in a probe batch.
fn batch_name(batch: &[(usize, String)], index: usize) -> String {
    batch
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, n)| n.clone())
        .unwrap_or_default()
}

/// Whether `kind` declares a quorum queue (whatever the broker answers).
fn declares_quorum(kind: &OpKind) -> bool {
    matches!(kind, OpKind::QueueDeclare { args, .. }
        if matches!(args.inner().get("x-queue-type"),
            Some(AMQPValue::LongString(t)) if t.as_bytes() == b"quorum"))
}

/// Operations after which RabbitMQ may still be removing something asynchronously (an
/// auto-delete queue after its last consumer, the exclusive queues of a closed connection).
fn disturbs(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::ChannelClose | OpKind::ConnectionClose | OpKind::Cancel { .. }
    )
}

/// `1-3,5` for {1,2,3,5}; `-` for none.
fn ranges(set: &BTreeSet<u64>) -> String {
    if set.is_empty() {
        return "-".into();
    }
    let mut out = Vec::new();
    let mut iter = set.iter().copied();
    let Some(mut start) = iter.next() else {
        return "-".into();
    };
    let mut end = start;
    for v in iter {
        if v == end + 1 {
            end = v;
        } else {
            out.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
            start = v;
            end = v;
        }
    }
    out.push(if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    });
    out.join(",")
}

/// `queue.declare-ok` and the like, from amq-protocol's method.
fn method_name(m: &AMQPClass) -> String {
    let class = match m {
        AMQPClass::Basic(_) => "basic",
        AMQPClass::Connection(_) => "connection",
        AMQPClass::Channel(_) => "channel",
        AMQPClass::Access(_) => "access",
        AMQPClass::Exchange(_) => "exchange",
        AMQPClass::Queue(_) => "queue",
        AMQPClass::Tx(_) => "tx",
        AMQPClass::Confirm(_) => "confirm",
    };
    let debug = format!("{m:?}");
    // `Queue(BindOk(BindOk))` → `bind-ok`.
    let inner = debug
        .split_once('(')
        .map_or("", |(_, rest)| rest)
        .split(['(', ' ', '{', ')'])
        .next()
        .unwrap_or("");
    let mut method = String::new();
    for (i, ch) in inner.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                method.push('-');
            }
            method.push(ch.to_ascii_lowercase());
        } else {
            method.push(ch);
        }
    }
    format!("{class}.{method}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_come_back_from_bodies_and_headers() {
        let p = AMQPProperties::default();
        assert_eq!(message_name(&p, &body_for(7, 12)), "m7+12");
        assert_eq!(message_name(&p, &body_for(123, 1)), "m123+5");
        let mut h = FieldTable::default();
        h.insert("dt-id".into(), AMQPValue::LongString("m9".into()));
        assert_eq!(message_name(&p.clone().with_headers(h), &[]), "m9+0");
        assert_eq!(message_name(&p, b"m3;..x"), "m3+6(corrupt)");
    }

    #[test]
    fn ranges_and_method_names() {
        let s: BTreeSet<u64> = [1, 2, 3, 5, 7, 8].into_iter().collect();
        assert_eq!(ranges(&s), "1-3,5,7-8");
        assert_eq!(ranges(&BTreeSet::new()), "-");
        assert_eq!(
            method_name(&AMQPClass::Queue(queue::AMQPMethod::BindOk(
                queue::BindOk {}
            ))),
            "queue.bind-ok"
        );
        assert_eq!(
            method_name(&AMQPClass::Basic(basic::AMQPMethod::GetEmpty(
                basic::GetEmpty {}
            ))),
            "basic.get-empty"
        );
    }
}
