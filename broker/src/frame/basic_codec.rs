//! Hand-written codecs for the frames every message crosses: `basic.publish`, `basic.ack` and
//! the content header on the way in, `basic.deliver` on the way out. Everything else goes
//! through `amq-protocol`.
//!
//! Why: in a callgrind profile of one RPC round trip (lapin client, 1 call in flight) the
//! `amq-protocol` parser (nom combinators with error contexts, a `Vec` of named flags per bit
//! field) was a quarter of the broker's instructions, ~1,600 per frame, and `gen_deliver`
//! allocated a flag name `String` per delivery. These functions read and write the same bytes
//! with plain slicing.
//!
//! Contract: a decoder returns `None` for anything it does not handle exactly as
//! `amq-protocol` would (another method, a `headers` table, a bad UTF-8 string, a short or
//! over-long payload); the caller then falls back to `amq-protocol`, which also produces the
//! error. When it returns `Some`, the value equals what `amq-protocol` decodes from the same
//! payload (checked against it in the tests below, including on mutated input).
//!
//! Layouts (AMQP 0-9-1 section 4.2.6 and the class/method grammar; shortstr = 1 length octet
//! then UTF-8, bits packed into one octet from the lowest bit up):
//! ```text
//! basic.publish  60 40 | reserved u16 | exchange shortstr | routing-key shortstr | bits: mandatory, immediate
//! basic.ack      60 80 | delivery-tag u64 | bits: multiple
//! basic.deliver  60 60 | consumer-tag shortstr | delivery-tag u64 | bits: redelivered
//!                      | exchange shortstr | routing-key shortstr
//! content header | class u16 | weight u16 | body-size u64 | property flags u16 | properties
//! ```
//! Property flags run from bit 15 (content-type) down to bit 2 (cluster-id); bit 13 is the
//! `headers` table. Tables are handled here when every value is a boolean (`t`), a 32- or
//! 64-bit integer (`I`, `l`/`L`) or a long string (`S`): the Lepus runtime's headers and most
//! clients' (a deadline, a retry count, a method name). Any other value type, in either
//! direction, is left to `amq-protocol`. A table is `u32` byte length, then entries of
//! shortstr key, type octet, value; amq-protocol keeps one value per key (the last).
//!
//! The second profile (callgrind, `lepus-bench rpc --impl lepus`, 2026-11-26): requests with a
//! one-entry `headers` table went through the nom parser on the way in (3,300 instructions
//! per call more than the same call without the table) and `gen_properties` on the way out.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::big_endian::BigEndianReader;

/// Reads big-endian fields off a payload; every read is `None` past the end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> BigEndianReader<'a> for Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }
}

impl Cursor<'_> {
    /// A field table whose values are all of the types this module handles.
    fn field_table(&mut self) -> Option<FieldTable> {
        let len = usize::try_from(self.u32()?).ok()?;
        let mut entries = Cursor {
            rest: self.take(len)?,
        };
        let mut table = FieldTable::default();
        while !entries.rest.is_empty() {
            let key = entries.short_string()?;
            let value = match entries.u8()? {
                b't' => AMQPValue::Boolean(entries.u8()? != 0),
                b'I' => AMQPValue::LongInt(i32::from_be_bytes(entries.u32()?.to_be_bytes())),
                b'l' | b'L' => {
                    AMQPValue::LongLongInt(i64::from_be_bytes(entries.u64()?.to_be_bytes()))
                }
                b'S' => {
                    let len = usize::try_from(entries.u32()?).ok()?;
                    AMQPValue::LongString(LongString::from(entries.take(len)?.to_vec()))
                }
                _ => return None,
            };
            table.insert(key, value);
        }
        Some(table)
    }

    fn short_string(&mut self) -> Option<ShortString> {
        let len = usize::from(self.u8()?);
        let text = std::str::from_utf8(self.take(len)?).ok()?;
        // At most 255 bytes by construction, so `try_new` cannot refuse it.
        ShortString::try_new(text.to_owned()).ok()
    }
}

/// Decodes a method payload (class id onwards) if it is `basic.publish` or `basic.ack`.
pub(super) fn decode_method(payload: &[u8]) -> Option<AMQPClass> {
    let mut c = Cursor { rest: payload };
    let method = match (c.u16()?, c.u16()?) {
        (60, 40) => {
            let _reserved = c.u16()?;
            let exchange = c.short_string()?;
            let routing_key = c.short_string()?;
            let bits = c.u8()?;
            basic::AMQPMethod::Publish(basic::Publish {
                exchange,
                routing_key,
                mandatory: bits & 1 != 0,
                immediate: bits & 2 != 0,
            })
        }
        (60, 80) => {
            let delivery_tag = c.u64()?;
            let bits = c.u8()?;
            basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple: bits & 1 != 0,
            })
        }
        _ => return None,
    };
    c.rest.is_empty().then_some(AMQPClass::Basic(method))
}

/// Decodes a content header payload (unless its `headers` table holds other value types).
pub(super) fn decode_header(payload: &[u8]) -> Option<AMQPContentHeader> {
    let mut c = Cursor { rest: payload };
    let class_id = c.u16()?;
    let _weight = c.u16()?;
    let body_size = c.u64()?;
    let flags = c.u16()?;
    let set = |bit: u16| flags & (1 << bit) != 0;
    let mut p = basic::AMQPProperties::default();
    if set(15) {
        p = p.with_content_type(c.short_string()?);
    }
    if set(14) {
        p = p.with_content_encoding(c.short_string()?);
    }
    if set(13) {
        p = p.with_headers(c.field_table()?);
    }
    if set(12) {
        p = p.with_delivery_mode(c.u8()?);
    }
    if set(11) {
        p = p.with_priority(c.u8()?);
    }
    if set(10) {
        p = p.with_correlation_id(c.short_string()?);
    }
    if set(9) {
        p = p.with_reply_to(c.short_string()?);
    }
    if set(8) {
        p = p.with_expiration(c.short_string()?);
    }
    if set(7) {
        p = p.with_message_id(c.short_string()?);
    }
    if set(6) {
        p = p.with_timestamp(c.u64()?);
    }
    if set(5) {
        p = p.with_type(c.short_string()?);
    }
    if set(4) {
        p = p.with_user_id(c.short_string()?);
    }
    if set(3) {
        p = p.with_app_id(c.short_string()?);
    }
    if set(2) {
        p = p.with_cluster_id(c.short_string()?);
    }
    c.rest.is_empty().then_some(AMQPContentHeader {
        class_id,
        body_size,
        properties: p,
    })
}

/// Appends the property flags and properties of a content header to `out`, as `gen_properties`
/// writes them; false (with `out` unchanged) when the `headers` table holds a value type this
/// module leaves to `amq-protocol`.
pub(super) fn encode_properties(out: &mut Vec<u8>, p: &basic::AMQPProperties) -> bool {
    if let Some(headers) = p.headers() {
        let plain = headers.inner().values().all(|v| {
            matches!(
                v,
                AMQPValue::Boolean(_)
                    | AMQPValue::LongInt(_)
                    | AMQPValue::LongLongInt(_)
                    | AMQPValue::LongString(_)
            )
        });
        if !plain {
            return false;
        }
    }
    let flag = |present: bool, bit: u16| if present { 1u16 << bit } else { 0 };
    let flags = flag(p.content_type().is_some(), 15)
        | flag(p.content_encoding().is_some(), 14)
        | flag(p.headers().is_some(), 13)
        | flag(p.delivery_mode().is_some(), 12)
        | flag(p.priority().is_some(), 11)
        | flag(p.correlation_id().is_some(), 10)
        | flag(p.reply_to().is_some(), 9)
        | flag(p.expiration().is_some(), 8)
        | flag(p.message_id().is_some(), 7)
        | flag(p.timestamp().is_some(), 6)
        | flag(p.kind().is_some(), 5)
        | flag(p.user_id().is_some(), 4)
        | flag(p.app_id().is_some(), 3)
        | flag(p.cluster_id().is_some(), 2);
    out.extend_from_slice(&flags.to_be_bytes());
    let opt = |out: &mut Vec<u8>, s: &Option<ShortString>| {
        if let Some(s) = s {
            short_string(out, s);
        }
    };
    opt(out, p.content_type());
    opt(out, p.content_encoding());
    if let Some(headers) = p.headers() {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        for (key, value) in headers.inner() {
            short_string(out, key);
            match value {
                AMQPValue::Boolean(b) => out.extend_from_slice(&[b't', u8::from(*b)]),
                AMQPValue::LongInt(i) => {
                    out.push(b'I');
                    out.extend_from_slice(&i.to_be_bytes());
                }
                AMQPValue::LongLongInt(i) => {
                    out.push(b'l');
                    out.extend_from_slice(&i.to_be_bytes());
                }
                AMQPValue::LongString(s) => {
                    out.push(b'S');
                    let bytes = s.as_bytes();
                    // A long string came off the wire with a u32 length (or was built by the
                    // broker from short values), so its length fits.
                    out.extend_from_slice(
                        &u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes(),
                    );
                    out.extend_from_slice(bytes);
                }
                // Checked above: no other value types.
                _ => {}
            }
        }
        let len = u32::try_from(out.len() - len_at - 4).unwrap_or(u32::MAX);
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
    if let Some(mode) = p.delivery_mode() {
        out.push(*mode);
    }
    if let Some(priority) = p.priority() {
        out.push(*priority);
    }
    opt(out, p.correlation_id());
    opt(out, p.reply_to());
    opt(out, p.expiration());
    opt(out, p.message_id());
    if let Some(ts) = p.timestamp() {
        out.extend_from_slice(&ts.to_be_bytes());
    }
    opt(out, p.kind());
    opt(out, p.user_id());
    opt(out, p.app_id());
    opt(out, p.cluster_id());
    true
}

/// Appends a whole `basic.deliver` method frame (header, payload, end octet) to `out`.
pub(super) fn encode_deliver(out: &mut Vec<u8>, channel: u16, d: &basic::Deliver) {
    encode_deliver_fields(
        out,
        channel,
        &super::DeliverFields {
            consumer_tag: &d.consumer_tag,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: &d.exchange,
            routing_key: &d.routing_key,
        },
    );
}

/// [`encode_deliver`] from borrowed fields: the same bytes, with no `basic::Deliver` (and so
/// no copy of the three names) built per delivery.
pub(super) fn encode_deliver_fields(out: &mut Vec<u8>, channel: u16, d: &super::DeliverFields<'_>) {
    let start = out.len();
    out.push(super::FRAME_METHOD);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&[0, 60, 0, 60]);
    short_string(out, d.consumer_tag);
    out.extend_from_slice(&d.delivery_tag.to_be_bytes());
    out.push(u8::from(d.redelivered));
    short_string(out, d.exchange);
    short_string(out, d.routing_key);
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.push(super::FRAME_END);
}

fn short_string(out: &mut Vec<u8>, s: &ShortString) {
    let bytes = s.as_str().as_bytes();
    // A ShortString holds at most 255 bytes (checked when it was made).
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests;
