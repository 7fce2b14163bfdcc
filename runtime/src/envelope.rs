//! The wire format of a Lepus RPC: what a request and a reply look like on AMQP, byte for byte,
//! so that a client in another language (Python's `pika` + `msgpack`, say) can speak it.
//!
//! # Request (caller -> worker)
//! Published to the exchange [`RPC_EXCHANGE`] (`lepus.rpc`, direct, durable) with routing key =
//! the service queue name; every worker binds its queue there with that key (and the default
//! exchange `""` routes to it too, for clients in other languages). `lepus.rpc` is declared
//! with `alternate-exchange = `[`UNROUTED_EXCHANGE`] (`lepus.rpc.unrouted`, headers, durable):
//! a request no queue takes goes there instead of vanishing, and each client binds a queue of
//! its own to it with `x-match = all, x-lepus-caller = <its id>`, so its unserved requests come
//! back to it as ordinary deliveries and the calls fail at once with `NoRoute`. Lepus does not
//! publish requests `mandatory`: lapin logs every `basic.return`, payload included, at WARN.
//!
//! Properties (AMQP 0-9-1 spec 1.8.2, `basic` content header):
//! | property         | value                                                              |
//! |------------------|--------------------------------------------------------------------|
//! | `content-type`   | `application/msgpack`                                              |
//! | `correlation-id` | 32 lowercase hex digits (a v4 UUID, unhyphenated), unique per call |
//! | `reply-to`       | `amq.rabbitmq.reply-to.*` (direct reply-to) or the caller's queue  |
//! | `expiration`     | the time left until the deadline, decimal milliseconds             |
//! | `delivery-mode`  | 1 (transient): a request is worthless after its deadline           |
//! | `type`           | the method name (routes among the handlers sharing the queue)      |
//! | `priority`       | optional, 0-255, honoured by queues declared with `x-max-priority` |
//! | headers          | [`HEADER_DEADLINE`] (`l`), [`HEADER_CALLER`] (`S`); inside a       |
//! |                  | handler's `Context`, also `x-lepus-trace-id` (`S`, the chain's id) |
//! |                  | W3C trace context: `traceparent`, `tracestate` (`S`), see below    |
//!
//! # Trace context (tasks and events too)
//! [`HEADER_TRACEPARENT`](crate::HEADER_TRACEPARENT) (`traceparent`,
//! `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) and
//! [`HEADER_TRACESTATE`](crate::HEADER_TRACESTATE) (`tracestate`), long strings, as W3C Trace
//! Context puts them in HTTP: written by calls, enqueues and publishes (the sending span's
//! context with the `otel` feature; else a handler forwards what it received), read by workers,
//! whose span continues the trace. A malformed or oversized value is ignored. See
//! `observe/propagation`.
//!
//! The method travels in the `type` property rather than a header: a one-entry header table
//! costs the caller and the worker's I/O thread four allocations less per call than a two-entry
//! one plus a long string, and every property of a request is built on one thread and freed on
//! another (lapin's I/O thread), where glibc's malloc serializes on the arena lock. Workers
//! still accept the method in an [`HEADER_METHOD`] header (`S`) when `type` is absent, the form
//! task enqueues and earlier Lepus clients use.
//!
//! Body: one MessagePack array holding the arguments in declaration order; a function without
//! arguments sends the empty array `0x90`. Structs are encoded as maps keyed by field name
//! (`rmp_serde::encode::write_named`); enums in serde's externally tagged form.
//! Example: `fib(30)` -> `91 1e` (fixarray of 1, positive fixint 30).
//!
//! # A `#[lepus::service]` method
//! A trait method travels exactly as the `#[lepus::rpc]` function of the same name and
//! arguments on the service's queue: for `#[lepus::service(queue = "accounts")] trait Accounts
//! { async fn deposit(&self, ctx: Context, account: String, cents: u64) -> Result<u64, E>; }`,
//! a request to `accounts` with `type` = `deposit` (or the method's `#[lepus(name = "..")]`)
//! and the body `[account, cents]`: `&self` and the injected `Context` / `State<T>` parameters
//! are not sent. `deposit("alice", 500)` -> `92 a5 61 6c 69 63 65 cd 01 f4`. The reply is the
//! function's. So a trait client calls a function's worker and the other way round
//! (`tests/services.rs`), and one queue can mix both forms.
//!
//! # Reply (worker -> caller)
//! Published to the default exchange with routing key = the request's `reply-to`, not
//! mandatory (a caller that gave up is not an error), `correlation-id` copied from the request,
//! `content-type: application/msgpack`. Body: one MessagePack array whose first element is a tag:
//! ```text
//! byte 0      byte 1   rest
//! 0x92        0x00     <value>            Ok: the handler's result
//! 0x92        0x01     <error>            Err: the handler's application error
//! 0x93        0x02     <kind> <message>   failure: kind is a positive fixint
//!                                           0 = panicked, 1 = bad request, 2 = unknown method,
//!                                           3 = unencodable or oversized result,
//!                                           4 = not run (the last worker of the queue
//!                                           shut down first), 5 = time limit exceeded,
//!                                           6 = request too large, 7 = delivery limit reached;
//!                                           message is a MessagePack str
//! ```
//! The application error is the error value itself when its type is a serde type, else its
//! text as a MessagePack str (`anyhow::Error`, `io::Error`, ...; see `remote_error`).
//! Example: `Ok(832040u64)` -> `92 00 ce 00 0c b2 28`.
//!
//! # Worker rules
//! A worker skips (acks without running) a request whose [`HEADER_DEADLINE`] has passed; it
//! routes by `type` (else [`HEADER_METHOD`]) among the handlers sharing the queue; a request
//! naming no method goes to the queue's only handler, if it has one; it publishes the reply, then
//! acks the request (at-least-once: a worker that dies before the ack lets the broker redeliver).
//!
//! Limits: a body nesting deeper than [`MAX_DEPTH`] (128) levels is refused as undecodable
//! (a bad request), by callers too. A worker refuses a body larger than its handler's maximum
//! message size (64 MiB by default), stops a handler at its caller's deadline or its own time
//! limit, and answers a request that was delivered as often as its delivery limit allows
//! (10 by default) without being answered with failure kind 6, counting deliveries in
//! [`HEADER_DELIVERY_COUNT`] (`l`) on a copy it republishes to the queue (RabbitMQ quorum
//! queues count them in `x-delivery-count`); see the `worker` module.
//!
//! Not implemented: compression (`content-encoding`), other codecs, streaming replies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, FailureKind};
use crate::msgpack_depth;
pub use crate::msgpack_depth::MAX_DEPTH;
use crate::remote_error::{ErrCodec, SerdeCodec};
pub use crate::worker::{HEADER_DELIVERY_COUNT, HEADER_EXCHANGE, HEADER_ROUTING_KEY};

/// The `content-type` of every Lepus request and reply.
pub const CONTENT_TYPE: &str = "application/msgpack";

/// Header naming the handler to run among those sharing a queue (long string): the task name of
/// a task enqueue; RPC requests carry the method in the `type` property instead, and workers
/// read this header when `type` is absent.
pub const HEADER_METHOD: &str = "x-lepus-method";

/// Header carrying the caller's deadline, Unix epoch milliseconds (signed 64-bit, AMQP `l`).
pub const HEADER_DEADLINE: &str = "x-lepus-deadline";

/// Header naming the calling client session (long string, 32 hex digits): where the
/// [`UNROUTED_EXCHANGE`] sends the request back when no queue takes it.
pub const HEADER_CALLER: &str = "x-lepus-caller";

/// The exchange RPC requests are published to (direct, durable, `alternate-exchange =`
/// [`UNROUTED_EXCHANGE`]); workers bind each service queue to it with the queue's name.
pub const RPC_EXCHANGE: &str = "lepus.rpc";

/// The alternate exchange of [`RPC_EXCHANGE`] (headers, durable): routes an unserved request
/// back to its caller by [`HEADER_CALLER`].
pub const UNROUTED_EXCHANGE: &str = "lepus.rpc.unrouted";

/// Reply tag: the handler returned a value.
const TAG_OK: u8 = 0x00;
/// Reply tag: the handler returned its application error.
const TAG_ERR: u8 = 0x01;
/// Reply tag: the worker could not run the handler.
const TAG_FAILED: u8 = 0x02;
/// MessagePack fixarray headers of length 2 and 3.
const FIXARRAY_2: u8 = 0x92;
const FIXARRAY_3: u8 = 0x93;

/// Encodes a value the way Lepus puts it on the wire (structs as maps).
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<(), rmp_serde::encode::Error> {
    rmp_serde::encode::write_named(buf, value)
}

/// Encodes a request body: the arguments tuple as a MessagePack array.
pub fn encode_request<A: Serialize>(args: &A) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut buf = Vec::with_capacity(32);
    encode_into(&mut buf, args)?;
    Ok(buf)
}

/// Decodes a request body into the handler's arguments tuple. A body nesting deeper than
/// [`MAX_DEPTH`] levels is refused before decoding (see `msgpack_depth`).
pub fn decode_request<A: DeserializeOwned>(body: &[u8]) -> Result<A, rmp_serde::decode::Error> {
    decode_bounded(body)
}

/// Decodes one MessagePack value, refusing a body that nests deeper than [`MAX_DEPTH`] levels
/// before decoding it (the decoder and the decoded value's `Drop` recurse once per level).
pub(crate) fn decode_bounded<T: DeserializeOwned>(
    body: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    if let Err(too_deep) = msgpack_depth::check(body, MAX_DEPTH) {
        return Err(rmp_serde::decode::Error::Uncategorized(
            too_deep.to_string(),
        ));
    }
    let mut decoder = rmp_serde::Deserializer::from_read_ref(body);
    // rmp-serde counts levels itself too; set a little above ours, it never trips first.
    decoder.set_max_depth(MAX_DEPTH + 2);
    T::deserialize(&mut decoder)
}

/// [`decode_bounded`] with the decoder's error as text: how the codecs of an RPC's error and of
/// a task's output and error report a body they cannot rebuild their value from.
pub(crate) fn decode_bounded_text<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    decode_bounded(body).map_err(|e| e.to_string())
}

/// `value` as a body of its own (one MessagePack value, as [`encode_into`] writes it); `None`
/// when it cannot be encoded (a task's result then carries no body).
pub(crate) fn encode_body<T: Serialize + ?Sized>(value: &T) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    encode_into(&mut buf, value).ok()?;
    Some(buf)
}

/// Encodes a reply carrying `Ok(value)` or `Err(app_error)` (a serde error type).
pub fn encode_reply<T: Serialize, E: Serialize + DeserializeOwned>(
    result: &Result<T, E>,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    encode_reply_with(result, &SerdeCodec::new())
}

/// Encodes a reply, the application error with `codec` (see `remote_error`).
pub(crate) fn encode_reply_with<T: Serialize, E>(
    result: &Result<T, E>,
    codec: &impl ErrCodec<E>,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut buf = Vec::with_capacity(32);
    match result {
        Ok(value) => {
            buf.extend_from_slice(&[FIXARRAY_2, TAG_OK]);
            encode_into(&mut buf, value)?;
        }
        Err(error) => {
            buf.extend_from_slice(&[FIXARRAY_2, TAG_ERR]);
            codec.encode(error, &mut buf)?;
        }
    }
    Ok(buf)
}

/// Encodes a failure reply (panic, bad request, unknown method).
pub fn encode_failure(kind: FailureKind, message: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 + message.len());
    buf.extend_from_slice(&[FIXARRAY_3, TAG_FAILED, kind.code()]);
    // Proof: serializing a `&str` into a `Vec` has no failure mode (no I/O, no map keys).
    if encode_into(&mut buf, message).is_err() {
        buf.truncate(3);
        buf.push(0xa0); // the empty fixstr
    }
    buf
}

/// Decodes a reply body into the caller's result type (a serde error type).
pub fn decode_reply<T: DeserializeOwned, E: Serialize + DeserializeOwned>(
    body: &[u8],
) -> Result<T, Error<E>> {
    decode_reply_with(body, &SerdeCodec::new())
}

/// Decodes a reply body, the application error with `codec` (see `remote_error`).
pub(crate) fn decode_reply_with<T: DeserializeOwned, E>(
    body: &[u8],
    codec: &impl ErrCodec<E>,
) -> Result<T, Error<E>> {
    let bad = |what: &str| Error::Decode(format!("reply {what} (body of {} bytes)", body.len()));
    match body {
        [FIXARRAY_2, TAG_OK, rest @ ..] => {
            decode_bounded(rest).map_err(|e| Error::Decode(format!("reply value: {e}")))
        }
        [FIXARRAY_2, TAG_ERR, rest @ ..] => match codec.decode(rest) {
            Ok(app_error) => Err(Error::Remote(app_error)),
            Err(e) => Err(Error::Decode(format!("reply application error: {e}"))),
        },
        [FIXARRAY_3, TAG_FAILED, kind, rest @ ..] => {
            let message: String = decode_bounded(rest).map_err(|_| bad("failure message"))?;
            Err(Error::Failed {
                kind: FailureKind::from_code(*kind),
                message,
            })
        }
        _ => Err(bad("tag")),
    }
}

/// How a reply body says its call ended (`Failed` for a body that is no reply).
pub(crate) fn outcome_of_reply(body: &[u8]) -> crate::observe::Outcome {
    use crate::observe::Outcome;
    match body {
        [FIXARRAY_2, TAG_OK, ..] => Outcome::Ok,
        [FIXARRAY_2, TAG_ERR, ..] => Outcome::RemoteError,
        [FIXARRAY_3, TAG_FAILED, kind, ..] => Outcome::of_failure(FailureKind::from_code(*kind)),
        _ => Outcome::Failed,
    }
}

/// The `correlation-id` of call `id`: its 32 lowercase hex digits, formatted without going
/// through `fmt` (one allocation, the string itself).
pub(crate) fn correlation_id(id: uuid::Uuid) -> ShortString {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    ShortString::from(&*id.simple().encode_lower(&mut buf))
}

/// The `expiration` of a request that may wait `timeout`: decimal milliseconds, at least 1
/// (RabbitMQ drops a message with expiration 0 unless a consumer is ready at once).
pub(crate) fn expiration(timeout: Duration) -> ShortString {
    let millis = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    ShortString::from(decimal(millis, &mut [0u8; 20]))
}

/// `n` in decimal, written at the end of `buf` (20 digits hold any `u64`).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        // Proof: `n % 10` < 10, so the cast cannot truncate.
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Proof: only ASCII digits were written, so this is valid UTF-8 and cannot fail.
    std::str::from_utf8(&buf[start..]).unwrap_or("0")
}

/// Milliseconds since the Unix epoch of `now + timeout` (a clock set before the epoch reads as
/// the epoch). The one reading of the wall clock behind every Unix-milliseconds time Lepus
/// writes (deadlines here, `task::headers::now_ms` for the rest).
pub(crate) fn deadline_after(timeout: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    millis(now + timeout)
}

/// True when `deadline_ms` (Unix epoch milliseconds) is in the past.
pub(crate) fn deadline_passed(deadline_ms: i64) -> bool {
    deadline_after(Duration::ZERO) > deadline_ms
}

/// `d` in whole milliseconds as an AMQP `l` (signed 64-bit), saturating at `i64::MAX`: how every
/// duration and time travels in Lepus's headers and queue arguments.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The request headers: the deadline and the caller (the method goes in `type`).
pub(crate) fn request_headers(deadline_ms: i64, caller: &LongString) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(HEADER_DEADLINE),
        AMQPValue::LongLongInt(deadline_ms),
    );
    headers.insert(
        ShortString::from(HEADER_CALLER),
        AMQPValue::LongString(caller.clone()),
    );
    headers
}

/// The arguments of [`RPC_EXCHANGE`]'s declaration (the same for every declarer: RabbitMQ
/// refuses a redeclaration with other arguments).
pub(crate) fn rpc_exchange_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(UNROUTED_EXCHANGE.into()),
    );
    args
}

/// Reads the method name of a request: its `type` property, else its [`HEADER_METHOD`] header
/// (`None` when neither is there or the header is not a string).
pub(crate) fn method_of(properties: &BasicProperties) -> Option<&[u8]> {
    if let Some(kind) = properties.kind() {
        return Some(kind.as_str().as_bytes());
    }
    match properties.headers().as_ref()?.inner().get(HEADER_METHOD)? {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

/// Reads the deadline of a request, accepting any integer AMQP type a foreign client may use.
pub(crate) fn deadline_of(headers: Option<&FieldTable>) -> Option<i64> {
    match headers?.inner().get(HEADER_DEADLINE)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::msgpack_depth::nested_arrays;

    #[test]
    fn request_for_fib_30_is_a_one_element_array() {
        assert_eq!(encode_request(&(30u32,)).unwrap(), vec![0x91, 0x1e]);
        assert_eq!(encode_request(&[(); 0]).unwrap(), vec![0x90]);
        let (n,): (u32,) = decode_request(&[0x91, 0x1e]).unwrap();
        assert_eq!(n, 30);
    }

    #[test]
    fn ok_reply_bytes_match_the_documented_layout() {
        let body = encode_reply::<u64, String>(&Ok(832_040)).unwrap();
        assert_eq!(body, vec![0x92, 0x00, 0xce, 0x00, 0x0c, 0xb2, 0x28]);
        assert_eq!(decode_reply::<u64, String>(&body).unwrap(), 832_040);
    }

    #[test]
    fn err_reply_decodes_to_the_typed_application_error() {
        let body = encode_reply::<u64, String>(&Err("overflow".into())).unwrap();
        assert_eq!(&body[..3], &[0x92, 0x01, 0xa8]);
        match decode_reply::<u64, String>(&body) {
            Err(Error::Remote(e)) => assert_eq!(e, "overflow"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn failure_reply_carries_kind_and_message() {
        let body = encode_failure(FailureKind::Panicked, "boom");
        assert_eq!(body, vec![0x93, 0x02, 0x00, 0xa4, b'b', b'o', b'o', b'm']);
        match decode_reply::<u64, String>(&body) {
            Err(Error::Failed { kind, message }) => {
                assert_eq!(kind, FailureKind::Panicked);
                assert_eq!(message, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_reply_is_a_decode_error() {
        assert!(matches!(
            decode_reply::<u64, String>(&[0xc1]),
            Err(Error::Decode(_))
        ));
        assert!(matches!(
            decode_reply::<u64, String>(&[0x92, 0x00, 0xa1, b'x']),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn correlation_id_and_expiration_are_formatted_like_display() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(correlation_id(id).as_str(), id.simple().to_string());
        for (timeout, text) in [
            (Duration::ZERO, "1"),
            (Duration::from_micros(500), "1"),
            (Duration::from_millis(7), "7"),
            (Duration::from_secs(30), "30000"),
            (Duration::MAX, "18446744073709551615"),
        ] {
            assert_eq!(expiration(timeout).as_str(), text);
        }
    }

    #[test]
    fn the_method_is_read_from_type_else_from_the_header() {
        let by_type = BasicProperties::default()
            .with_type("fib".into())
            .with_headers(request_headers(1234, &"c".into()));
        assert_eq!(method_of(&by_type), Some(&b"fib"[..]));
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_METHOD.into(),
            AMQPValue::LongString(lapin::types::LongString::from("send_email")),
        );
        let by_header = BasicProperties::default().with_headers(headers.clone());
        assert_eq!(method_of(&by_header), Some(&b"send_email"[..]));
        let both = by_header.with_type("fib".into());
        assert_eq!(method_of(&both), Some(&b"fib"[..]));
        assert_eq!(method_of(&BasicProperties::default()), None);
    }

    #[test]
    fn deeply_nested_bodies_are_refused_before_decoding() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        #[serde(untagged)]
        enum Tree {
            Node(#[allow(dead_code)] Vec<Tree>),
            Leaf(#[allow(dead_code)] u8),
        }
        // Run on half the stack of a tokio worker thread (2 MiB), where a debug build would
        // overflow long before 1,000 levels.
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                for depth in [1_000, 100_000] {
                    let err = decode_request::<Tree>(&nested_arrays(depth)).unwrap_err();
                    assert!(err.to_string().contains("deeper than 128"), "{err}");
                    let mut reply = vec![FIXARRAY_2, TAG_OK];
                    reply.extend_from_slice(&nested_arrays(depth));
                    match decode_reply::<Tree, String>(&reply) {
                        Err(Error::Decode(message)) => assert!(message.contains("deeper")),
                        other => panic!("unexpected {other:?}"),
                    }
                    reply[1] = TAG_ERR;
                    assert!(matches!(
                        decode_reply::<u8, Tree>(&reply),
                        Err(Error::Decode(_))
                    ));
                }
                // The limit itself still decodes.
                assert!(decode_request::<Tree>(&nested_arrays(MAX_DEPTH - 1)).is_ok());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn headers_round_trip() {
        let headers = request_headers(1234, &"caller".into());
        assert_eq!(headers.inner().len(), 2);
        assert_eq!(deadline_of(Some(&headers)), Some(1234));
        assert!(deadline_passed(1234));
        assert!(!deadline_passed(deadline_after(Duration::from_secs(60))));
    }
}
