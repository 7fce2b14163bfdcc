//! Random programs: well-formed AMQP 0-9-1 traffic that a real client could send, biased
//! towards operations that succeed (so programs get deep) with a steady share of edge cases
//! and errors (so the error paths are compared too).
//!
//! The generator keeps a rough model — which names it declared, which consumers it started —
//! only to pick likely arguments; the brokers decide what actually happens. The same seed
//! always gives the same program.

use std::collections::BTreeSet;

use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::deliberate;
use crate::program::{
    ConsumerTag, ExchangeKind, ExchangeName, Key, Op, OpKind, Program, Props, QueueName, Target,
    FIXED_EXCHANGES, FIXED_QUEUES, PREDECLARED,
};

/// Shape of the programs.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Operations per program.
    pub ops: usize,
    /// The most connections a program uses.
    pub max_conns: u8,
    /// The most channels per connection.
    pub max_channels: u16,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            ops: 60,
            max_conns: 3,
            max_channels: 3,
        }
    }
}

/// The program for `seed` and `index` (each program of a campaign is reproducible alone).
pub fn program(seed: u64, index: u64, shape: &Shape) -> Program {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut g = Gen {
        rng: StdRng::seed_from_u64(mixed),
        queues: BTreeSet::new(),
        exchanges: BTreeSet::new(),
        consumers: Vec::new(),
        server_queues: 0,
        server_tags: 0,
        quorum: false,
        quorum_allowed: false,
        classic_sac: false,
    };
    let conns = g.rng.random_range(1..=shape.max_conns);
    let channels = g.rng.random_range(1..=shape.max_channels);
    g.quorum_allowed = conns == 1 && channels == 1;
    let frame_max = if g.rng.random_bool(0.3) {
        4096
    } else {
        131_072
    };
    let mut no_cancel_notify = BTreeSet::new();
    for c in 0..conns {
        if g.rng.random_bool(0.1) {
            no_cancel_notify.insert(c);
        }
    }
    let mut ops = Vec::with_capacity(shape.ops);
    while ops.len() < shape.ops {
        let conn = g.rng.random_range(0..conns);
        let ch = g.rng.random_range(1..=channels);
        let kind = g.op_kind(conn, ch);
        let ch = if matches!(kind, OpKind::ConnectionClose) {
            0
        } else {
            ch
        };
        if deliberate::generate(&kind) {
            ops.push(Op { conn, ch, kind });
        }
    }
    Program {
        frame_max,
        no_cancel_notify,
        ops,
    }
}

struct Gen {
    rng: StdRng,
    /// Queues probably declared.
    queues: BTreeSet<QueueName>,
    /// Exchanges probably declared.
    exchanges: BTreeSet<ExchangeName>,
    /// Consumers probably running: (conn, ch, tag).
    consumers: Vec<(u8, u16, ConsumerTag)>,
    server_queues: u8,
    server_tags: u8,
    /// A quorum queue was declared: explicit requeues (nack, reject, recover) are left out
    /// from then on (`deliberate`, D8).
    quorum: bool,
    /// Quorum queues only in programs of one connection with one channel, whose closes
    /// return messages in the order the queue holds them (`deliberate`, D8).
    quorum_allowed: bool,
    /// A classic queue with `x-single-active-consumer: true` was declared: `basic.cancel` is
    /// left out from then on (`deliberate`, D1).
    classic_sac: bool,
}

const ROUTING_KEYS: [&str; 6] = ["", "a", "b", "a.b", "a.b.c", "b.c"];
const BINDING_KEYS: [&str; 10] = ["", "a", "b", "a.b", "#", "*", "a.*", "#.b", "*.b.#", "a.#"];
const HEADER_KEYS: [&str; 4] = ["h1", "h2", "h3", "x-h"];

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn op_kind(&mut self, conn: u8, ch: u16) -> OpKind {
        // Weights per operation (out of their sum).
        const WEIGHTS: [(u32, u8); 24] = [
            (10, 0), // queue.declare
            (5, 1),  // exchange.declare
            (8, 2),  // queue.bind
            (4, 3),  // queue.unbind
            (2, 4),  // exchange.bind
            (1, 5),  // exchange.unbind
            (2, 6),  // queue.purge
            (3, 7),  // queue.delete
            (2, 8),  // exchange.delete
            (26, 9), // basic.publish
            (6, 10), // basic.get
            (6, 11), // basic.consume
            (3, 12), // basic.cancel
            (8, 13), // basic.ack
            (4, 14), // basic.nack
            (3, 15), // basic.reject
            (3, 16), // basic.qos
            (1, 17), // basic.recover
            (2, 18), // confirm.select
            (1, 19), // tx.select
            (2, 20), // tx.commit
            (1, 21), // tx.rollback
            (2, 22), // channel.close
            (1, 23), // connection.close
        ];
        let total: u32 = WEIGHTS.iter().map(|w| w.0).sum();
        let mut roll = self.rng.random_range(0..total);
        let mut which = 0;
        for (w, id) in WEIGHTS {
            if roll < w {
                which = id;
                break;
            }
            roll -= w;
        }
        match which {
            0 => self.queue_declare(),
            1 => self.exchange_declare(),
            2 => OpKind::QueueBind {
                q: self.queue_ref(),
                x: self.exchange_ref(false),
                key: self.binding_key(),
                args: self.binding_args(),
            },
            3 => OpKind::QueueUnbind {
                q: self.queue_ref(),
                x: self.exchange_ref(false),
                key: self.binding_key(),
                args: self.binding_args(),
            },
            4 => OpKind::ExchangeBind {
                dest: self.exchange_ref(false),
                src: self.exchange_ref(false),
                key: self.binding_key(),
                args: self.binding_args(),
            },
            5 => OpKind::ExchangeUnbind {
                dest: self.exchange_ref(false),
                src: self.exchange_ref(false),
                key: self.binding_key(),
                args: self.binding_args(),
            },
            6 => OpKind::QueuePurge {
                q: self.queue_ref(),
            },
            7 => {
                let q = self.queue_ref();
                if self.chance(0.5) {
                    self.queues.remove(&q);
                }
                OpKind::QueueDelete {
                    q,
                    if_unused: self.chance(0.2),
                    if_empty: self.chance(0.2),
                }
            }
            8 => {
                let x = self.exchange_ref(false);
                if self.chance(0.5) {
                    self.exchanges.remove(&x);
                }
                OpKind::ExchangeDelete {
                    x,
                    if_unused: self.chance(0.2),
                }
            }
            9 => self.publish(),
            10 => OpKind::Get {
                q: self.queue_ref(),
                no_ack: self.chance(0.3),
            },
            11 => {
                let tag = match self.rng.random_range(0..10) {
                    0..=5 => ConsumerTag::Fixed(self.rng.random_range(0..4)),
                    6 => ConsumerTag::Long,
                    _ => {
                        self.server_tags = self.server_tags.saturating_add(1);
                        ConsumerTag::Server(0)
                    }
                };
                let stored = match tag {
                    ConsumerTag::Server(_) => ConsumerTag::Server(self.server_tags - 1),
                    t => t,
                };
                self.consumers.push((conn, ch, stored));
                let mut args = FieldTable::default();
                if self.chance(0.15) {
                    self.int_arg(&mut args, "x-priority", -2..4);
                }
                OpKind::Consume {
                    q: self.queue_ref(),
                    tag,
                    no_ack: self.chance(0.3),
                    exclusive: self.chance(0.1),
                    args,
                }
            }
            // D1: another operation instead.
            12 if self.classic_sac => self.op_kind(conn, ch),
            12 => {
                let mine: Vec<ConsumerTag> = self
                    .consumers
                    .iter()
                    .filter(|(c, h, _)| *c == conn && *h == ch)
                    .map(|(_, _, t)| *t)
                    .collect();
                let tag = if !mine.is_empty() && self.chance(0.85) {
                    self.pick(&mine)
                } else if self.chance(0.5) {
                    ConsumerTag::Fixed(self.rng.random_range(0..4))
                } else {
                    ConsumerTag::Server(self.rng.random_range(0..2))
                };
                self.consumers
                    .retain(|(c, h, t)| !(*c == conn && *h == ch && *t == tag));
                OpKind::Cancel { tag }
            }
            13 => OpKind::Ack {
                target: self.target(),
                multiple: self.chance(0.25),
            },
            14 => OpKind::Nack {
                target: self.target(),
                multiple: self.chance(0.25),
                requeue: self.chance(0.6) && !self.quorum,
            },
            15 => OpKind::Reject {
                target: self.target(),
                requeue: self.chance(0.6) && !self.quorum,
            },
            16 => OpKind::Qos {
                prefetch_count: if self.chance(0.05) {
                    u16::MAX
                } else {
                    self.rng.random_range(0..6)
                },
                global: self.chance(0.3),
            },
            17 if self.quorum => OpKind::Ack {
                target: self.target(),
                multiple: true,
            },
            17 => OpKind::Recover {
                requeue: self.chance(0.9),
            },
            18 => OpKind::ConfirmSelect,
            19 => OpKind::TxSelect,
            20 => OpKind::TxCommit,
            21 => OpKind::TxRollback,
            22 => {
                self.consumers.retain(|(c, h, _)| !(*c == conn && *h == ch));
                OpKind::ChannelClose
            }
            _ => {
                self.consumers.retain(|(c, _, _)| *c != conn);
                OpKind::ConnectionClose
            }
        }
    }

    /// A queue for an operation on an existing one: mostly a declared name.
    fn queue_ref(&mut self) -> QueueName {
        let known: Vec<QueueName> = self.queues.iter().copied().collect();
        if !known.is_empty() && self.chance(0.8) {
            return self.pick(&known);
        }
        match self.rng.random_range(0..20) {
            0..=13 => QueueName::Fixed(self.rng.random_range(0..FIXED_QUEUES)),
            14..=15 => QueueName::Server(self.rng.random_range(0..self.server_queues.max(1))),
            16..=17 => QueueName::Long,
            _ => QueueName::Empty,
        }
    }

    /// An exchange: mostly a declared or predeclared one.
    fn exchange_ref(&mut self, for_publish: bool) -> ExchangeName {
        let known: Vec<ExchangeName> = self.exchanges.iter().copied().collect();
        match self.rng.random_range(0..20) {
            0..=8 if !known.is_empty() => self.pick(&known),
            0..=4 if for_publish => ExchangeName::Default,
            0..=11 => ExchangeName::Amq(self.rng.random_range(0..PREDECLARED.len() as u8)),
            12..=16 => ExchangeName::Fixed(self.rng.random_range(0..FIXED_EXCHANGES)),
            17 => ExchangeName::Long,
            18 => ExchangeName::Default,
            _ => ExchangeName::Reserved,
        }
    }

    fn queue_declare(&mut self) -> OpKind {
        let passive = self.chance(0.1);
        let q = match self.rng.random_range(0..20) {
            0..=12 => QueueName::Fixed(self.rng.random_range(0..FIXED_QUEUES)),
            13..=15 => {
                if !passive {
                    self.server_queues = self.server_queues.saturating_add(1);
                }
                QueueName::Empty
            }
            16..=17 => QueueName::Long,
            18 => QueueName::Reserved,
            _ => QueueName::Server(self.rng.random_range(0..self.server_queues.max(1))),
        };
        match q {
            QueueName::Empty => {
                self.queues
                    .insert(QueueName::Server(self.server_queues.saturating_sub(1)));
            }
            q => {
                self.queues.insert(q);
            }
        }
        let mut args = FieldTable::default();
        if self.chance(0.5) {
            self.queue_args(&mut args);
        }
        // A quorum queue must be durable, and neither exclusive nor auto-delete: mostly so.
        let quorum = matches!(
            args.inner().get("x-queue-type"),
            Some(AMQPValue::LongString(t)) if t.as_bytes() == b"quorum"
        );
        self.quorum |= quorum;
        self.classic_sac |= !quorum
            && matches!(
                args.inner().get("x-single-active-consumer"),
                Some(AMQPValue::Boolean(true))
            );
        let (durable, exclusive, auto_delete) = if quorum {
            (0.9, 0.05, 0.05)
        } else {
            (0.3, 0.25, 0.2)
        };
        OpKind::QueueDeclare {
            q,
            passive,
            durable: self.chance(durable),
            exclusive: self.chance(exclusive),
            auto_delete: self.chance(auto_delete),
            args,
        }
    }

    fn queue_args(&mut self, args: &mut FieldTable) {
        if self.chance(0.25) {
            // `x-queue-type`: mostly quorum, some explicit classic, a few invalid ones. Streams
            // are left out (`deliberate`, D5).
            let v = match self.rng.random_range(0..20) {
                0..=13 if self.quorum_allowed => AMQPValue::LongString("quorum".into()),
                0..=13 => AMQPValue::LongString("classic".into()),
                14..=17 => AMQPValue::LongString("classic".into()),
                18 => AMQPValue::LongString("bogus".into()),
                _ => AMQPValue::LongInt(1),
            };
            args.insert("x-queue-type".into(), v);
            if self.chance(0.15) {
                // Quorum only (406 on a classic queue); never reached in a program (no
                // message is redelivered 50 times), so that the limit RabbitMQ enforces
                // and the bundled broker does not (D4) does not show.
                self.int_arg(args, "x-delivery-limit", 50..100);
            }
        }
        if self.chance(0.3) {
            let v = match self.rng.random_range(0..10) {
                0..=4 => self.int_value(0),
                5..=7 => self.int_value(3_600_000),
                8 => self.int_value(-1),
                _ => AMQPValue::LongString("soon".into()),
            };
            args.insert("x-message-ttl".into(), v);
        }
        if self.chance(0.1) {
            let v = if self.chance(0.9) {
                self.int_value(3_600_000)
            } else {
                self.int_value(0)
            };
            args.insert("x-expires".into(), v);
        }
        if self.chance(0.3) {
            self.int_arg(args, "x-max-length", 0..4);
        }
        if self.chance(0.1) {
            self.int_arg(args, "x-max-length-bytes", 0..60);
        }
        if self.chance(0.25) {
            let o = self.pick(&["drop-head", "reject-publish", "reject-publish-dlx", "bogus"]);
            args.insert("x-overflow".into(), AMQPValue::LongString(o.into()));
        }
        if self.chance(0.35) {
            let x = match self.rng.random_range(0..6) {
                0..=2 => format!("e{}", self.rng.random_range(0..FIXED_EXCHANGES)),
                3 => String::new(),
                4 => "amq.fanout".into(),
                _ => "amq.direct".into(),
            };
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(x.into()),
            );
        }
        if self.chance(0.2) {
            let k = if self.chance(0.6) {
                format!("q{}", self.rng.random_range(0..FIXED_QUEUES))
            } else {
                self.pick(&ROUTING_KEYS).to_owned()
            };
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(k.into()),
            );
        }
        if self.chance(0.15) {
            let n = if self.chance(0.9) {
                self.rng.random_range(0..10)
            } else {
                300
            };
            let v = self.int_value(n);
            args.insert("x-max-priority".into(), v);
        }
        if self.chance(0.05) {
            args.insert("x-queue-mode".into(), AMQPValue::LongString("lazy".into()));
        }
        if self.chance(0.25) {
            args.insert(
                "x-single-active-consumer".into(),
                AMQPValue::Boolean(self.chance(0.8)),
            );
        }
    }

    /// Sets argument `name` to a number drawn from `range`, as [`Self::int_value`] types it.
    fn int_arg(&mut self, args: &mut FieldTable, name: &str, range: std::ops::Range<i64>) {
        let n = self.rng.random_range(range);
        let v = self.int_value(n);
        args.insert(name.into(), v);
    }

    /// `n` as one of the integer types RabbitMQ accepts for numeric arguments (mostly `I`).
    fn int_value(&mut self, n: i64) -> AMQPValue {
        match self.rng.random_range(0..10) {
            0..=5 => AMQPValue::LongInt(n as i32),
            6 => AMQPValue::LongLongInt(n),
            7 if (i16::MIN as i64..=i16::MAX as i64).contains(&n) => AMQPValue::ShortInt(n as i16),
            8 if (0..=u8::MAX as i64).contains(&n) => AMQPValue::ShortShortUInt(n as u8),
            9 if (0..=u32::MAX as i64).contains(&n) => AMQPValue::LongUInt(n as u32),
            _ => AMQPValue::LongInt(n as i32),
        }
    }

    fn exchange_declare(&mut self) -> OpKind {
        let x = match self.rng.random_range(0..20) {
            0..=14 => ExchangeName::Fixed(self.rng.random_range(0..FIXED_EXCHANGES)),
            15..=16 => ExchangeName::Long,
            17 => ExchangeName::Reserved,
            18 => ExchangeName::Amq(self.rng.random_range(0..PREDECLARED.len() as u8)),
            _ => ExchangeName::Default,
        };
        self.exchanges.insert(x);
        let kind = match self.rng.random_range(0..20) {
            0..=5 => ExchangeKind::Direct,
            6..=9 => ExchangeKind::Fanout,
            10..=14 => ExchangeKind::Topic,
            15..=18 => ExchangeKind::Headers,
            _ => ExchangeKind::Bogus,
        };
        let mut args = FieldTable::default();
        if self.chance(0.15) {
            let alt = format!("e{}", self.rng.random_range(0..FIXED_EXCHANGES));
            args.insert(
                "alternate-exchange".into(),
                AMQPValue::LongString(alt.into()),
            );
        }
        OpKind::ExchangeDeclare {
            x,
            kind,
            passive: self.chance(0.1),
            durable: self.chance(0.3),
            auto_delete: self.chance(0.15),
            internal: self.chance(0.08),
            args,
        }
    }

    fn binding_key(&mut self) -> Key {
        if self.chance(0.3) {
            Key::queue(self.queue_ref())
        } else {
            Key::Lit(self.pick(&BINDING_KEYS).to_owned())
        }
    }

    fn binding_args(&mut self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.chance(0.3) {
            if self.chance(0.8) {
                let m = self.pick(&["all", "any", "all", "any", "bogus"]);
                args.insert("x-match".into(), AMQPValue::LongString(m.into()));
            }
            for _ in 0..self.rng.random_range(0..3) {
                let k = self.pick(&HEADER_KEYS);
                let v = self.header_match_value();
                args.insert(k.into(), v);
            }
        }
        args
    }

    fn header_match_value(&mut self) -> AMQPValue {
        match self.rng.random_range(0..5) {
            0 | 1 => AMQPValue::LongString(self.pick(&["a", "b"]).into()),
            2 => AMQPValue::LongInt(self.rng.random_range(0..2)),
            3 => AMQPValue::Boolean(self.chance(0.5)),
            _ => AMQPValue::Void,
        }
    }

    fn publish(&mut self) -> OpKind {
        let x = self.exchange_ref(true);
        let key = if matches!(x, ExchangeName::Default) || self.chance(0.3) {
            Key::queue(self.queue_ref())
        } else {
            Key::Lit(self.pick(&ROUTING_KEYS).to_owned())
        };
        let body = match self.rng.random_range(0..20) {
            0..=11 => self.rng.random_range(1..20),
            12..=15 => 0,
            16..=18 => self.rng.random_range(20..5000),
            _ => self.rng.random_range(5000..20_000),
        };
        OpKind::Publish {
            x,
            key,
            mandatory: self.chance(0.3),
            immediate: self.chance(0.01),
            props: self.props(),
            body,
        }
    }

    fn props(&mut self) -> Props {
        let mut p = Props::default();
        if self.chance(0.4) {
            return p;
        }
        let s = |g: &mut Gen, pool: &[&str]| Some(g.pick(pool).to_owned());
        if self.chance(0.2) {
            p.content_type = s(self, &["text/plain", "application/json", ""]);
        }
        if self.chance(0.1) {
            p.content_encoding = s(self, &["gzip", "utf-8"]);
        }
        if self.chance(0.35) {
            p.headers = Some(self.headers());
        }
        if self.chance(0.3) {
            p.delivery_mode = Some(self.pick(&[1, 2, 2, 1, 0, 3]));
        }
        if self.chance(0.2) {
            p.priority = Some(self.rng.random_range(0..12));
        }
        if self.chance(0.15) {
            p.correlation_id = s(self, &["c1", "c2", ""]);
        }
        if self.chance(0.1) {
            p.reply_to = s(self, &["r1", "amq.rabbitmq.reply-to.x"]);
        }
        if self.chance(0.2) {
            p.expiration = s(
                self,
                &["0", "3600000", "0", "3600000", "abc", "-5", "", "1.5"],
            );
        }
        if self.chance(0.15) {
            p.message_id = s(self, &["id1", "id2"]);
        }
        if self.chance(0.1) {
            p.timestamp = Some(self.pick(&[0, 1_700_000_000, u64::MAX]));
        }
        if self.chance(0.1) {
            p.kind = s(self, &["t1", "t2"]);
        }
        if self.chance(0.08) {
            p.user_id = s(self, &["guest", "guest", "nobody"]);
        }
        if self.chance(0.08) {
            p.app_id = s(self, &["app"]);
        }
        if self.chance(0.03) {
            p.cluster_id = s(self, &["cl"]);
        }
        p
    }

    /// A headers table: routing-relevant keys with match-able values, and now and then every
    /// field type, nested.
    fn headers(&mut self) -> FieldTable {
        let mut t = FieldTable::default();
        for _ in 0..self.rng.random_range(0..4) {
            let k = self.pick(&HEADER_KEYS);
            let v = self.header_match_value();
            t.insert(k.into(), v);
        }
        if self.chance(0.3) {
            let v = self.any_value(2);
            t.insert("misc".into(), v);
        }
        if self.chance(0.05) {
            let keys = self.rng.random_range(0..3);
            let mut items = Vec::new();
            for _ in 0..keys {
                let k = if self.chance(0.7) {
                    format!("q{}", self.rng.random_range(0..FIXED_QUEUES))
                } else {
                    self.pick(&ROUTING_KEYS).to_owned()
                };
                items.push(AMQPValue::LongString(k.into()));
            }
            let which = if self.chance(0.6) { "CC" } else { "BCC" };
            t.insert(which.into(), AMQPValue::FieldArray(FieldArray::from(items)));
        }
        t
    }

    /// A value of any field type, arrays and tables up to `depth` deep.
    fn any_value(&mut self, depth: u8) -> AMQPValue {
        let top = if depth == 0 { 15 } else { 17 };
        match self.rng.random_range(0..top) {
            0 => AMQPValue::Boolean(self.chance(0.5)),
            1 => AMQPValue::ShortShortInt(self.rng.random()),
            2 => AMQPValue::ShortShortUInt(self.rng.random()),
            3 => AMQPValue::ShortInt(self.rng.random()),
            4 => AMQPValue::ShortUInt(self.rng.random()),
            5 => AMQPValue::LongInt(self.rng.random()),
            6 => AMQPValue::LongUInt(self.rng.random()),
            7 => AMQPValue::LongLongInt(self.rng.random()),
            8 => AMQPValue::Float(self.pick(&[0.0, 1.5, -2.25e10, f32::MAX])),
            9 => AMQPValue::Double(self.pick(&[0.0, -1.5, 3.5e200, f64::MIN_POSITIVE])),
            10 => AMQPValue::DecimalValue(DecimalValue {
                scale: self.rng.random_range(0..10),
                value: self.rng.random(),
            }),
            11 => {
                let len = self.rng.random_range(0..12);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                AMQPValue::LongString(LongString::from(bytes))
            }
            12 => AMQPValue::Timestamp(self.rng.random()),
            13 => {
                let len = self.rng.random_range(0..6);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                AMQPValue::ByteArray(ByteArray::from(bytes))
            }
            14 => AMQPValue::Void,
            15 => {
                let n = self.rng.random_range(0..4);
                let items = (0..n)
                    .map(|_| self.any_value(depth - 1))
                    .collect::<Vec<_>>();
                AMQPValue::FieldArray(FieldArray::from(items))
            }
            _ => {
                let mut t = FieldTable::default();
                for i in 0..self.rng.random_range(0..4) {
                    let v = self.any_value(depth - 1);
                    t.insert(format!("k{i}").into(), v);
                }
                AMQPValue::FieldTable(t)
            }
        }
    }

    fn target(&mut self) -> Target {
        match self.rng.random_range(0..20) {
            0..=13 => Target::Outstanding(self.rng.random_range(0..4)),
            14..=16 => Target::Latest,
            17 => Target::Zero,
            _ => Target::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_reproducible_and_round_trip_through_text() {
        let shape = Shape::default();
        for index in 0..200 {
            let p = program(42, index, &shape);
            assert_eq!(p, program(42, index, &shape));
            assert_eq!(p.ops.len(), shape.ops);
            let text = p.to_string();
            let back: Program = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
            for (a, b) in back.ops.iter().zip(p.ops.iter()) {
                assert_eq!(a, b, "{b}");
            }
            assert_eq!(back, p, "{text}");
        }
        assert_ne!(program(42, 0, &shape), program(42, 1, &shape));
    }

    /// Single-active-consumer queues are generated, of both types, and no `basic.cancel`
    /// follows the declaration of a classic one (D1).
    #[test]
    fn classic_single_active_consumer_queues_are_never_followed_by_a_cancel() {
        let shape = Shape::default();
        let mut declared = [0; 2];
        for index in 0..300 {
            let mut classic_sac = false;
            for op in program(7, index, &shape).ops {
                match op.kind {
                    OpKind::QueueDeclare { args, .. } => {
                        let on = matches!(
                            args.inner().get("x-single-active-consumer"),
                            Some(AMQPValue::Boolean(true))
                        );
                        let quorum = matches!(
                            args.inner().get("x-queue-type"),
                            Some(AMQPValue::LongString(t)) if t.as_bytes() == b"quorum"
                        );
                        if on {
                            declared[usize::from(quorum)] += 1;
                            classic_sac |= !quorum;
                        }
                    }
                    OpKind::Cancel { .. } => assert!(!classic_sac, "program {index}"),
                    _ => {}
                }
            }
        }
        assert!(declared.iter().all(|n| *n > 0), "{declared:?}");
    }
}
