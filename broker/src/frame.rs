//! Frame codec glue: cuts AMQP frames out of a connection's read buffer and writes frames into
//! its write buffer, using `amq-protocol` for method and content-header payloads.
//!
//! Byte layout of a frame (AMQP 0-9-1 section 4.2.3):
//! ```text
//! 0      1         3             7                  7+size     8+size
//! | type | channel | size (u32)  | payload (size B) | 0xCE end |
//! ```
//! type 1 = method, 2 = content header, 3 = content body, 8 = heartbeat. Before any frame the
//! client sends the 8-byte protocol header `AMQP 0 0 9 1`.
//!
//! We check the size against frame_max *before* buffering the payload (a frame over frame_max
//! is 501 FRAME_ERROR as soon as its header is seen), and check the end octet ourselves. Body
//! payloads are sliced out of the read buffer as [`Bytes`] without copying; `basic.publish`,
//! `basic.ack` and content headers without a `headers` table are decoded by [`basic_codec`], and
//! `basic.deliver` is encoded there too; every other method and header payload goes to
//! `amq_protocol::frame::parse_frame` / `gen_frame`, after [`nesting`] has checked that no field
//! table in it is nested deeper than [`MAX_NESTING_DEPTH`] (the parser recurses per level; a
//! deeper payload is 501 FRAME_ERROR). Not implemented: the legacy 0-8/0-9 protocol headers
//! (answered with our header, like any other mismatch).

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, basic::gen_properties, basic::AMQPProperties, AMQPClass};
use amq_protocol::types::ShortString;
use bytes::{Buf, Bytes, BytesMut};

use crate::error::AmqpError;

mod basic_codec;
mod big_endian;
mod nesting;

pub(crate) use nesting::{check_table_entries, MAX_NESTING_DEPTH};

/// The protocol header of AMQP 0-9-1, sent by clients first and by us on a mismatch.
pub(crate) const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Frame type octets and the end octet (spec section 4.2.3).
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Bytes of a frame that are not payload: 7 header + 1 end octet.
pub(crate) const FRAME_OVERHEAD: usize = 8;
/// The class id of `basic`, the only content class.
const CLASS_BASIC: u16 = 60;

/// One frame received from a client.
#[derive(Debug)]
pub(crate) enum InboundFrame {
    /// A method frame: the channel and the decoded method.
    Method(u16, AMQPClass),
    /// A content header frame.
    Header(u16, AMQPContentHeader),
    /// A content body frame; the payload is a slice of the read buffer.
    Body(u16, Bytes),
    /// A heartbeat frame on `channel` (anything but 0 is a protocol error).
    Heartbeat(u16),
}

/// Cuts the next frame out of `buf`. `Ok(None)` means "not all of it has arrived yet".
///
/// `frame_max` is the negotiated maximum frame size including the 8 bytes of overhead.
pub(crate) fn decode(
    buf: &mut BytesMut,
    frame_max: u32,
) -> Result<Option<InboundFrame>, AmqpError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(AmqpError::frame_error(format!(
            "type {kind} is not a frame type"
        )));
    }
    if frame_max != 0 && size + FRAME_OVERHEAD > frame_max as usize {
        return Err(AmqpError::frame_error(format!(
            "frame size {} exceeds frame_max {frame_max}",
            size + FRAME_OVERHEAD
        )));
    }
    if buf.len() < size + FRAME_OVERHEAD {
        buf.reserve(size + FRAME_OVERHEAD - buf.len());
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        return Err(AmqpError::frame_error(format!(
            "frame end octet 0x{:02x} is not 0xCE",
            buf[7 + size]
        )));
    }
    let frame = buf.split_to(size + FRAME_OVERHEAD);
    match kind {
        FRAME_BODY => {
            let mut frame = frame.freeze();
            frame.advance(7);
            frame.truncate(size);
            Ok(Some(InboundFrame::Body(channel, frame)))
        }
        FRAME_HEARTBEAT => Ok(Some(InboundFrame::Heartbeat(channel))),
        _ => {
            let payload = &frame[7..7 + size];
            let hot = if kind == FRAME_METHOD {
                basic_codec::decode_method(payload).map(|m| InboundFrame::Method(channel, m))
            } else {
                basic_codec::decode_header(payload).map(|h| InboundFrame::Header(channel, h))
            };
            if hot.is_some() {
                return Ok(hot);
            }
            decode_with_amq_protocol(&frame, kind, size)
        }
    }
}

/// Decodes a method or content-header frame the hot path left alone.
fn decode_with_amq_protocol(
    frame: &[u8],
    kind: u8,
    size: usize,
) -> Result<Option<InboundFrame>, AmqpError> {
    // The parser recurses once per nested table or array: bound the depth before it runs.
    let payload = &frame[7..7 + size];
    let nesting = if kind == FRAME_METHOD {
        nesting::check_method(payload)
    } else {
        nesting::check_header(payload)
    };
    if nesting.is_err() {
        let err = AmqpError::frame_error(format!(
            "field tables nested deeper than {MAX_NESTING_DEPTH} levels"
        ));
        return Err(match kind {
            FRAME_METHOD if size >= 4 => err.in_method(
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            ),
            _ => err,
        });
    }
    match parse_frame(frame) {
        Ok((_, AMQPFrame::Method(ch, class))) => Ok(Some(InboundFrame::Method(ch, class))),
        Ok((_, AMQPFrame::Header(ch, header))) => Ok(Some(InboundFrame::Header(ch, header))),
        Ok(_) => Err(AmqpError::frame_error("unexpected frame payload")),
        Err(_) if kind == FRAME_METHOD => Err(unknown_method(&frame[7..7 + size])),
        Err(_) => Err(AmqpError::frame_error("malformed content header")),
    }
}

/// The error for a method frame amq-protocol could not decode: an unknown class/method pair is
/// 540 NOT_IMPLEMENTED as in RabbitMQ; a known one with bad fields is a 501 FRAME_ERROR.
fn unknown_method(payload: &[u8]) -> AmqpError {
    if payload.len() < 4 {
        return AmqpError::frame_error("method frame too short");
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    let known = matches!(
        (class_id, method_id),
        (10, 10..=61)
            | (20, 10..=41)
            | (30, 10..=11)
            | (40, 10..=51)
            | (50, 10..=51)
            | (60, 10..=120)
            | (85, 10..=11)
            | (90, 10..=31)
    );
    if known {
        AmqpError::frame_error(format!("cannot decode method {class_id}.{method_id}"))
            .in_method(class_id, method_id)
    } else {
        AmqpError::not_implemented(format!("unknown method {class_id}.{method_id}"))
    }
}

/// Appends one method frame to `out`.
pub(crate) fn encode_method(out: &mut Vec<u8>, channel: u16, method: AMQPClass) {
    if let AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)) = &method {
        basic_codec::encode_deliver(out, channel, deliver);
        return;
    }
    let frame = AMQPFrame::Method(channel, method);
    encode_with(out, &frame);
}

/// The fields of a `basic.deliver`, borrowed from where they live (the consumer's tag, the
/// message's exchange and routing key) rather than copied into a `basic::Deliver`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliverFields<'a> {
    /// The consumer the message goes to.
    pub(crate) consumer_tag: &'a ShortString,
    /// The channel's delivery tag for it.
    pub(crate) delivery_tag: u64,
    /// Delivered before.
    pub(crate) redelivered: bool,
    /// The exchange it was published to.
    pub(crate) exchange: &'a ShortString,
    /// The routing key it was published with.
    pub(crate) routing_key: &'a ShortString,
}

/// Appends a `basic.deliver` method frame built from borrowed fields: the same bytes as
/// [`encode_method`] with the equivalent `basic::Deliver`.
pub(crate) fn encode_deliver(out: &mut Vec<u8>, channel: u16, fields: &DeliverFields<'_>) {
    basic_codec::encode_deliver_fields(out, channel, fields);
}

/// A heartbeat frame: type 8, channel 0, empty payload.
pub(crate) const HEARTBEAT: &[u8] = &[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];

/// Appends the content header frame and as many body frames as `frame_max` requires.
///
/// The body is copied once, from the shared message buffer into the write buffer.
pub(crate) fn encode_content(
    out: &mut Vec<u8>,
    channel: u16,
    properties: &AMQPProperties,
    body: &[u8],
    frame_max: u32,
) {
    // Content header: type, channel, size placeholder, class, weight, body size, properties.
    let start = out.len();
    out.push(FRAME_HEADER);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    if !basic_codec::encode_properties(out, properties) {
        let buf = std::mem::take(out);
        *out = match gen_properties(properties)(WriteContext::from(buf)) {
            Ok(ctx) => ctx.write,
            // Writing into a Vec cannot fail for lack of space; an error would be a codec bug,
            // and the properties were parsed by the same codec, so this branch is unreachable.
            Err(_) => Vec::new(),
        };
    }
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for piece in body.chunks(chunk) {
        out.push(FRAME_BODY);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(piece.len() as u32).to_be_bytes());
        out.extend_from_slice(piece);
        out.push(FRAME_END);
    }
}

fn encode_with(out: &mut Vec<u8>, frame: &AMQPFrame) {
    let buf = std::mem::take(out);
    // Generation into a growable Vec only fails on codec bugs; see `encode_content`.
    *out = gen_frame(frame)(WriteContext::from(buf))
        .map(|ctx| ctx.write)
        .unwrap_or_default();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use amq_protocol::protocol::channel;

    #[test]
    fn incomplete_frame_is_none_and_complete_frame_decodes() {
        let mut out = Vec::new();
        encode_method(
            &mut out,
            3,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        for cut in 0..out.len() {
            let mut buf = BytesMut::from(&out[..cut]);
            assert!(decode(&mut buf, 131072).unwrap().is_none(), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&out[..]);
        match decode(&mut buf, 131072).unwrap() {
            Some(InboundFrame::Method(3, AMQPClass::Channel(channel::AMQPMethod::Open(_)))) => {}
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_end_octet_and_oversized_frames_are_frame_errors() {
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0, 0, 1, b'x', 0xCD][..]);
        assert_eq!(decode(&mut buf, 131072).unwrap_err().code.code(), 501);
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(decode(&mut buf, 4096).unwrap_err().code.code(), 501);
        let mut buf = BytesMut::from(&[9u8, 0, 1, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(decode(&mut buf, 4096).unwrap_err().code.code(), 501);
    }

    #[test]
    fn body_frames_split_at_frame_max_and_round_trip() {
        let body = vec![7u8; 10_000];
        let mut out = Vec::new();
        encode_content(&mut out, 1, &AMQPProperties::default(), &body, 4096);
        let mut buf = BytesMut::from(&out[..]);
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(frame) = decode(&mut buf, 4096).unwrap() {
            frames += 1;
            match frame {
                InboundFrame::Header(1, h) => assert_eq!(h.body_size, 10_000),
                InboundFrame::Body(1, b) => got.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(frames, 1 + 3);
        assert_eq!(got, body);
    }
}
