//! AMQP 0-9-1 frames for the bench's own minimal client ([`crate::raw_client`]): the writers
//! for the few methods it sends and a reader that slices frames out of the receive buffer.
//!
//! Why not lapin here: a lapin connection runs its own I/O thread and hands every frame and
//! delivery through channels and wakers, which costs the bench about 5 µs of CPU per message —
//! more than a fast broker spends. On 2 cores the load generator would then be the bottleneck
//! and the broker comparison would measure lapin. This client writes whole batches of frames
//! with one syscall and parses deliveries in place, like lavinmqperf's client.
//!
//! Frame layout (AMQP 0-9-1 §4.2.3, §4.2.6), all integers big-endian:
//!
//! ```text
//! 0      1         3         7                  7+size
//! | type | channel | size    | payload ...      | 0xCE |
//!   u8     u16       u32
//! type 1 method:  class-id u16, method-id u16, arguments
//! type 2 header:  class-id u16, weight u16 (0), body-size u64, property-flags u16, properties
//! type 3 body:    body bytes (at most frame-max - 8 per frame)
//! type 8 heartbeat (channel 0, empty payload)
//! ```
//!
//! Not implemented (the bench does not need them): field tables with entries (we send empty
//! tables), every property but `delivery-mode`, heartbeats (we ask for none), multiple channels.

use crate::error::{BenchError, Result};

/// Frame type octets.
pub(crate) const FRAME_METHOD: u8 = 1;
pub(crate) const FRAME_HEADER: u8 = 2;
pub(crate) const FRAME_BODY: u8 = 3;
pub(crate) const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// Basic-class property flags (§4.2.6.1), bit 15 first: content-type, content-encoding,
/// headers, delivery-mode, priority, correlation-id, reply-to, ... Properties follow the flags
/// in that order, only those whose bit is set.
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_PRIORITY: u16 = 1 << 11;
const FLAG_CORRELATION_ID: u16 = 1 << 10;
const FLAG_REPLY_TO: u16 = 1 << 9;

/// The properties the bench sets on a message.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Props<'a> {
    /// `delivery-mode = 2`.
    pub(crate) persistent: bool,
    /// `correlation-id`.
    pub(crate) correlation_id: Option<&'a str>,
    /// `reply-to`.
    pub(crate) reply_to: Option<&'a str>,
}

/// (class-id, method-id) pairs of the methods we send or read.
pub(crate) mod method {
    pub(crate) const CONNECTION_START: (u16, u16) = (10, 10);
    pub(crate) const CONNECTION_START_OK: (u16, u16) = (10, 11);
    pub(crate) const CONNECTION_TUNE: (u16, u16) = (10, 30);
    pub(crate) const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
    pub(crate) const CONNECTION_OPEN: (u16, u16) = (10, 40);
    pub(crate) const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    pub(crate) const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    pub(crate) const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    pub(crate) const CHANNEL_OPEN: (u16, u16) = (20, 10);
    pub(crate) const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    pub(crate) const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    pub(crate) const BASIC_QOS: (u16, u16) = (60, 10);
    pub(crate) const BASIC_QOS_OK: (u16, u16) = (60, 11);
    pub(crate) const BASIC_CONSUME: (u16, u16) = (60, 20);
    pub(crate) const BASIC_CONSUME_OK: (u16, u16) = (60, 21);
    pub(crate) const BASIC_CANCEL: (u16, u16) = (60, 30);
    pub(crate) const BASIC_PUBLISH: (u16, u16) = (60, 40);
    pub(crate) const BASIC_DELIVER: (u16, u16) = (60, 60);
    pub(crate) const BASIC_ACK: (u16, u16) = (60, 80);
    pub(crate) const BASIC_NACK: (u16, u16) = (60, 120);
    pub(crate) const CONFIRM_SELECT: (u16, u16) = (85, 10);
    pub(crate) const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
}

/// Appends one frame whose payload `fill` writes.
fn frame(buf: &mut Vec<u8>, ty: u8, channel: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    buf.push(ty);
    buf.extend_from_slice(&channel.to_be_bytes());
    let size_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let start = buf.len();
    fill(buf);
    // A payload over 4 GiB cannot be built by the callers (bodies are split at frame-max).
    let size = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    buf.push(FRAME_END);
}

/// Appends a method frame: class and method ids, then the arguments `args` writes.
pub(crate) fn method_frame(
    buf: &mut Vec<u8>,
    channel: u16,
    id: (u16, u16),
    args: impl FnOnce(&mut Vec<u8>),
) {
    frame(buf, FRAME_METHOD, channel, |b| {
        b.extend_from_slice(&id.0.to_be_bytes());
        b.extend_from_slice(&id.1.to_be_bytes());
        args(b);
    });
}

/// Appends a short string (u8 length; longer input is refused by the callers' checks).
pub(crate) fn shortstr(buf: &mut Vec<u8>, s: &str) {
    let len = s.len().min(255);
    buf.push(len as u8);
    buf.extend_from_slice(&s.as_bytes()[..len]);
}

/// Appends a long string (u32 length).
pub(crate) fn longstr(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(s);
}

/// Appends an empty field table.
pub(crate) fn empty_table(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&0u32.to_be_bytes());
}

/// Appends `basic.publish` + content header + body frames for one message.
pub(crate) fn publish(
    buf: &mut Vec<u8>,
    channel: u16,
    exchange: &str,
    routing_key: &str,
    persistent: bool,
    body: &[u8],
    frame_max: usize,
) {
    let props = Props {
        persistent,
        ..Props::default()
    };
    publish_with(buf, channel, exchange, routing_key, props, body, frame_max);
}

/// [`publish`] with correlation-id and reply-to as well.
pub(crate) fn publish_with(
    buf: &mut Vec<u8>,
    channel: u16,
    exchange: &str,
    routing_key: &str,
    props: Props<'_>,
    body: &[u8],
    frame_max: usize,
) {
    method_frame(buf, channel, method::BASIC_PUBLISH, |b| {
        b.extend_from_slice(&0u16.to_be_bytes()); // reserved-1 (ticket)
        shortstr(b, exchange);
        shortstr(b, routing_key);
        b.push(0); // mandatory = immediate = false
    });
    frame(buf, FRAME_HEADER, channel, |b| {
        b.extend_from_slice(&60u16.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&(body.len() as u64).to_be_bytes());
        let mut flags = 0u16;
        if props.persistent {
            flags |= FLAG_DELIVERY_MODE;
        }
        if props.correlation_id.is_some() {
            flags |= FLAG_CORRELATION_ID;
        }
        if props.reply_to.is_some() {
            flags |= FLAG_REPLY_TO;
        }
        b.extend_from_slice(&flags.to_be_bytes());
        if props.persistent {
            b.push(2);
        }
        if let Some(c) = props.correlation_id {
            shortstr(b, c);
        }
        if let Some(r) = props.reply_to {
            shortstr(b, r);
        }
    });
    for chunk in body.chunks(frame_max.saturating_sub(8).max(1)) {
        frame(buf, FRAME_BODY, channel, |b| b.extend_from_slice(chunk));
    }
}

/// Appends `basic.ack`.
pub(crate) fn basic_ack(buf: &mut Vec<u8>, channel: u16, delivery_tag: u64, multiple: bool) {
    method_frame(buf, channel, method::BASIC_ACK, |b| {
        b.extend_from_slice(&delivery_tag.to_be_bytes());
        b.push(u8::from(multiple));
    });
}

/// Appends `connection.close` 200 "bench done" (class 0, method 0: a normal close).
pub(crate) fn connection_close(buf: &mut Vec<u8>) {
    method_frame(buf, 0, method::CONNECTION_CLOSE, |b| {
        b.extend_from_slice(&200u16.to_be_bytes());
        shortstr(b, "bench done");
        b.extend_from_slice(&[0, 0, 0, 0]);
    });
}

/// One frame sliced out of the receive buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    /// Frame type octet.
    pub(crate) ty: u8,
    /// Channel number.
    pub(crate) channel: u16,
    /// Payload, without the frame end octet.
    pub(crate) payload: &'a [u8],
}

/// The frame at the start of `buf` and its total length, `Ok(None)` if it is not all there yet.
pub(crate) fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = 7 + size + 1;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(BenchError::Protocol("bad frame-end octet".into()));
    }
    Ok(Some((
        Frame {
            ty: buf[0],
            channel: u16::from_be_bytes([buf[1], buf[2]]),
            payload: &buf[7..7 + size],
        },
        total,
    )))
}

/// A cursor over a method's arguments.
#[derive(Debug)]
pub(crate) struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    /// The (class, method) id of a method payload and a cursor over its arguments.
    pub(crate) fn of(payload: &'a [u8]) -> Result<((u16, u16), Args<'a>)> {
        let mut a = Args { rest: payload };
        let class = a.u16()?;
        let method = a.u16()?;
        Ok(((class, method), a))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(BenchError::Protocol("method arguments cut short".into()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Reads a u8.
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian u16.
    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a short string (as bytes).
    pub(crate) fn shortstr(&mut self) -> Result<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
}

/// The body size of a content header payload.
pub(crate) fn header_body_size(payload: &[u8]) -> Result<u64> {
    let mut a = Args { rest: payload };
    a.take(4)?; // class-id, weight
    a.u64()
}

/// What an RPC peer reads from a content header: body size, correlation-id, reply-to.
pub(crate) type RpcFields<'a> = (u64, Option<&'a [u8]>, Option<&'a [u8]>);

/// The body size, correlation-id and reply-to of a content header payload (properties after
/// reply-to are not read).
pub(crate) fn header_rpc_fields(payload: &[u8]) -> Result<RpcFields<'_>> {
    let mut a = Args { rest: payload };
    a.take(4)?; // class-id, weight
    let size = a.u64()?;
    let flags = a.u16()?;
    if flags & FLAG_CONTENT_TYPE != 0 {
        a.shortstr()?;
    }
    if flags & FLAG_CONTENT_ENCODING != 0 {
        a.shortstr()?;
    }
    if flags & FLAG_HEADERS != 0 {
        let n = a.u32()? as usize;
        a.take(n)?;
    }
    if flags & FLAG_DELIVERY_MODE != 0 {
        a.u8()?;
    }
    if flags & FLAG_PRIORITY != 0 {
        a.u8()?;
    }
    let corr = if flags & FLAG_CORRELATION_ID != 0 {
        Some(a.shortstr()?)
    } else {
        None
    };
    let reply_to = if flags & FLAG_REPLY_TO != 0 {
        Some(a.shortstr()?)
    } else {
        None
    };
    Ok((size, corr, reply_to))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn publish_frames_are_byte_exact() {
        let mut buf = Vec::new();
        publish(&mut buf, 1, "", "q", true, b"hello", 131072);
        let expected: Vec<u8> = [
            // basic.publish: type 1, channel 1, size 10 = ids 4 + ticket 2 + "" 1 + "q" 2 + bits 1
            &[1, 0, 1, 0, 0, 0, 10][..],
            &[0, 60, 0, 40, 0, 0, 0, 1, b'q', 0, 0xCE],
            // header: type 2, size 15: class 60, weight 0, body size 5, flags 0x1000, mode 2
            &[
                2, 0, 1, 0, 0, 0, 15, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0, 2, 0xCE,
            ],
            // body
            &[3, 0, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0xCE],
        ]
        .concat();
        assert_eq!(buf, expected);
    }

    #[test]
    fn connection_close_is_byte_exact() {
        let mut buf = Vec::new();
        connection_close(&mut buf);
        let expected: Vec<u8> = [
            // method frame: type 1, channel 0, size 21 = ids 4 + code 2 + text 11 + class 2 + method 2
            &[1, 0, 0, 0, 0, 0, 21][..],
            &[0, 10, 0, 50, 0, 200, 10],
            b"bench done",
            &[0, 0, 0, 0, 0xCE],
        ]
        .concat();
        assert_eq!(buf, expected);
    }

    #[test]
    fn rpc_properties_round_trip() {
        let mut buf = Vec::new();
        let props = Props {
            persistent: true,
            correlation_id: Some("42"),
            reply_to: Some("amq.rabbitmq.reply-to.x"),
        };
        publish_with(&mut buf, 1, "", "q", props, b"hi", 4096);
        let (_, n) = parse_frame(&buf).unwrap().unwrap();
        let (header, _) = parse_frame(&buf[n..]).unwrap().unwrap();
        let (size, corr, reply_to) = header_rpc_fields(header.payload).unwrap();
        assert_eq!(size, 2);
        assert_eq!(corr, Some(&b"42"[..]));
        assert_eq!(reply_to, Some(&b"amq.rabbitmq.reply-to.x"[..]));
        // Headers (a table) and content-type before them are skipped by length.
        let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(
            &(FLAG_CONTENT_TYPE | FLAG_HEADERS | FLAG_CORRELATION_ID).to_be_bytes(),
        );
        p.extend_from_slice(&[3, b'a', b'/', b'b', 0, 0, 0, 2, 9, 9, 1, b'7']);
        assert_eq!(header_rpc_fields(&p).unwrap(), (1, Some(&b"7"[..]), None));
    }

    #[test]
    fn bodies_split_at_frame_max() {
        let mut buf = Vec::new();
        publish(&mut buf, 1, "x", "", false, &[7u8; 20], 8 + 8);
        let mut at = 0;
        let mut bodies = Vec::new();
        while let Some((f, n)) = parse_frame(&buf[at..]).unwrap() {
            if f.ty == FRAME_BODY {
                bodies.push(f.payload.len());
            }
            at += n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(bodies, vec![8, 8, 4]);
    }

    #[test]
    fn parses_ack_and_waits_for_whole_frames() {
        let mut buf = Vec::new();
        basic_ack(&mut buf, 1, 42, true);
        assert!(parse_frame(&buf[..buf.len() - 1]).unwrap().is_none());
        let (f, n) = parse_frame(&buf).unwrap().unwrap();
        assert_eq!((f.ty, f.channel, n), (FRAME_METHOD, 1, buf.len()));
        let (id, mut a) = Args::of(f.payload).unwrap();
        assert_eq!(id, method::BASIC_ACK);
        assert_eq!((a.u64().unwrap(), a.u8().unwrap()), (42, 1));
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] = 0;
        assert!(parse_frame(&bad).is_err());
    }
}
