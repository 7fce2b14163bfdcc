//! `lepus-broker`: the bundled AMQP 0-9-1 broker. Standard clients (lapin, pika, amqprs,
//! kombu) work against it unchanged; embed it with
//! `Broker::builder().listen("127.0.0.1:0").start().await?`, or run the `lepus-broker` binary.
//!
//! # Layers
//! Imports only look down: a module uses its own layer and the layers below it, never one
//! above, and no two modules import each other through any chain (`.ci/layers` checks both,
//! reading this list). Bytes flow the other way round: a frame comes up from the socket
//! (codec), is handled by the connection, dispatched to its method, applied to the broker
//! state, and persisted; the codec sits low because every layer above it speaks frames.
//! 1. entry and wiring: `server`, `broker_handle`, `tls`, `admin`, `management/`, `fuzzing`,
//!    `durable_store`
//! 2. connection: `connection/`, `auth`
//! 3. methods: `methods/`
//! 4. broker state: `broker_state`, `config`, `connection_registry`, `channel/`, `vhost/`,
//!    `exchange`, `queue/`, `access/`, `memory`, `disk_alarm`, `alarms`, `connection_blocked`,
//!    `metrics`, `busy_poll`
//! 5. persistence: `persistence`
//! 6. codec, outbox and errors: `frame/`, `outbox/`, `error`
//! 7. store: `store/`
//! 8. foundation: `message`, `shutdown`, `sockets`, `fairness`, `field_value`
//!
//! # Layout
//! - [`server`](Broker): the builder and the accept loop.
//! - `broker_handle`: the [`BrokerHandle`] of a running broker: its addresses and its shutdown.
//! - `tls`: the `amqps://` listener (rustls), feeding the same connection code.
//! - [`admin`](Admin): the administrative API over users, vhosts and permissions.
//! - `management/`: the management HTTP API (RabbitMQ's shapes), the dashboard and Prometheus
//!   `/metrics`.
//! - `fuzzing` (feature `fuzzing` only): entry points for the fuzz targets in `broker/fuzz/`.
//! - `connection/`: one client connection — the read loop, heartbeats, close and cleanup
//!   (`mod`), the handshake (`handshake`), frames to methods and content assembly (`dispatch`),
//!   events from other tasks and replies held for the store (`events`), the read-buffer block
//!   a one-frame body pins and its memory charge (`read_block`).
//! - `connection_blocked`: `connection.blocked`/`unblocked` — pausing publishers' reads while
//!   a resource alarm is raised.
//! - `alarms`: the broker's resource alarms (memory, disk) as one set connections watch.
//! - `disk_alarm`: the disk alarm (`--disk-free-limit`), the data directory's free space
//!   checked every second.
//! - `busy_poll`: polling the sockets for a short window after each read instead of sleeping
//!   (`--busy-poll-us`), which takes thread wake-ups off request/reply round trips.
//! - `auth`: PLAIN/AMQPLAIN response parsing.
//! - `methods/`: one file per AMQP class (`basic`, `basic_publish`, `channel`, `confirm`,
//!   `exchange`, `queue`, `tx`), and the connection's `session` they act on (channels, vhost,
//!   outbox, grants), which the connection task owns.
//! - `broker_state`: what every connection task shares (`BrokerShared`: configuration, vhosts,
//!   access control, the registries).
//! - `config`: the broker's configuration and the TLS listener's options.
//! - `connection_registry`: open connections, for the management API, and the events other
//!   tasks send a connection task.
//! - `channel/`: channel state — delivery tags, unacked messages, prefetch, deliveries (`mod`,
//!   which implements the queue's `ConsumerChannel`), content assembly, confirms and tx
//!   (`publishing`), what the management API reads of it (`figures`), and `channel/registry`,
//!   the open channels of all connections, for the
//!   management API.
//! - `vhost/`: a vhost's topology (exchanges, bindings, queues) (`mod`), routing (`routing`),
//!   dead-lettering (`dead_letter`), the queue operations that may drop messages and the
//!   queues' timer task (`queue_ops`), the direct reply-to registry (`reply_to`), the vhost
//!   registry (`registry`).
//! - `exchange`: exchange types, their bindings and routing indexes (topic: a trie automaton).
//! - `queue/`: a queue — enqueue, dispatch, get, requeue, purge, delete (`mod`); its arguments
//!   (`arguments`), `x-queue-type` (`queue_type`: what each type takes and compares),
//!   consumers and credit (`consumer`), ready list per priority (`ready`), paging past the
//!   memory budget (`paging`), TTL and x-expires (`housekeeping`), trimming to the length
//!   limits and dropping expired heads (`limits`), what it returns to be
//!   dead-lettered (`dead_letter`), its counts and figures (`figures`), and `ConsumerChannel`,
//!   the channel as a queue knows it.
//! - `access/`: users (salted hashes, tags), vhosts, permissions, their file in the data dir,
//!   the loopback rule, and the per-connection permission cache each method is checked against.
//! - `memory`: the memory budget (paging persistent bodies out to the store) and the memory
//!   high-watermark (the alarm behind `connection.blocked`); byte-size parsing.
//! - `metrics`: per-vhost message counters (published, delivered, acked).
//! - `durable_store`: the segment log as the broker's `Persistence` (the adapter between the
//!   store's records and the broker's queues), and restoring the recovered topology at start.
//! - `persistence`: the `Persistence` trait publisher confirms and durable `-ok`s wait on
//!   (in-memory implementation; the segment log plugs in through `durable_store`).
//! - `frame/`: frame codec glue over `amq-protocol` (framing, frame_max, body slicing), and
//!   `frame/basic_codec`, the hand-written codec of the frames every message crosses
//!   (`basic.publish`, `basic.ack`, content headers in; `basic.deliver` out); `frame/nesting`,
//!   the bound on field-table depth checked before `amq-protocol` parses a payload;
//!   `frame/big_endian`, the big-endian reads both of those payload cursors share.
//! - `outbox/`: a connection's outgoing frames, in order, written in batches (one write per
//!   burst, by the task that produced them or by the connection's writer task, `outbox/writer`);
//!   channels queue deliveries on it without seeing the connection.
//! - `error`: reply codes (mapped here only) and the crate's error types.
//! - [`store`]: durable topology and persistent messages under `--data-dir` (segment log,
//!   group commit, recovery, compaction).
//! - `message`: the shared message (properties + `Bytes` body), and `Held`, the memory a
//!   message (or the read block its body is a slice of) holds, charged while it lives.
//! - `shutdown`: the broker-wide stop signal, a listener's accept loop (and its throttled log of
//!   failed and refused accepts), and draining a listener's connection tasks.
//! - `sockets`: the socket budget all listeners share, which keeps file descriptors for the
//!   store; the process's descriptor limit.
//! - `fairness`: how much of a lock, task step or worker one client's work may take.
//! - `field_value`: reading AMQP field values as clients send them (an integer of any width,
//!   a string short or long).
//!
//! # Not implemented (yet), and deliberate departures
//! - Memory: only persistent messages of durable queues (with a data directory) can be paged
//!   out past the memory budget; the memory alarm (`connection.blocked`) counts queued messages,
//!   not the process RSS (see `memory`); there is no per-connection credit
//!   flow; deliveries to no-ack consumers are not credit-limited.
//! - As in RabbitMQ: `channel.flow active=false`, `basic.recover requeue=false` and
//!   `immediate=true` are 540; `basic.qos prefetch_size` is ignored (amq-protocol drops it);
//!   arguments we do not know are accepted and ignored. `x-single-active-consumer` works as in
//!   RabbitMQ 3.10 (`queue/consumer`), except that the next consumer takes over at once after
//!   a `basic.cancel` of the active one of a classic queue (RabbitMQ 3.10 stalls, then its
//!   queue process crashes on the next publish).
//!   `x-queue-type` is checked at declare as RabbitMQ 3.10 checks it (each type's arguments
//!   and flags, redeclare equivalence; see `queue/queue_type`), and a consumer of a quorum
//!   queue is as RabbitMQ's (no global qos, `exclusive` ignored); underneath every queue is
//!   the same classic-like queue (no `x-delivery-count` header, no delivery limit).
//! - Departure: a channel *number* above the negotiated channel_max is refused (530) even while
//!   fewer channels are open (the spec's reading); RabbitMQ only counts open channels.
//! - `max_message_size` is checked against the size a content header announces, before any
//!   body arrives; RabbitMQ checks the assembled body (same 406 and text).

mod access;
mod admin;
mod alarms;
mod auth;
mod broker_handle;
mod broker_state;
mod busy_poll;
mod channel;
mod config;
mod connection;
mod connection_blocked;
mod connection_registry;
mod disk_alarm;
mod durable_store;
mod error;
mod exchange;
mod fairness;
mod field_value;
mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod management;
mod memory;
mod message;
mod methods;
mod metrics;
mod outbox;
#[cfg(test)]
mod paging_tests;
mod persistence;
mod queue;
mod server;
mod shutdown;
mod sockets;
pub mod store;
mod tls;
mod vhost;

pub use access::{PermissionInfo, UserInfo};
pub use admin::Admin;
pub use broker_handle::BrokerHandle;
pub use error::{AdminError, Error, ReplyCode};
pub use management::percent_encode;
pub use memory::parse_bytes;
pub use server::{Broker, BrokerBuilder};
pub use sockets::raise_fd_limit;
