//! A grammar of client traffic for the structure-aware fuzz targets: the fuzzer's bytes are
//! read as *choices* (which frame, which method, which value, how deep), and the grammar turns
//! them into frames that are valid far more often than random bytes would be — so the fuzzer
//! spends its time inside the method handlers and the field-table decoder, not at the first
//! length check.
//!
//! What it generates:
//! - every client-to-server method of AMQP 0-9-1 (and RabbitMQ's `basic.nack`,
//!   `confirm.select`, `exchange.bind`/`unbind`), its arguments biased to boundary values
//!   (empty and 255-byte short strings, 0 and the maximum of each integer);
//! - field tables and arrays of every field type (including unknown type octets), of any size,
//!   and nested to any depth: a nest of thousands of tables or arrays is written iteratively
//!   (the grammar itself never recurses deeply), inside the frame budget;
//! - content headers with every property, bodies, heartbeats;
//! - for the connection target, a handshake (protocol header, `start-ok` with a grammar-made
//!   client-properties table, `tune-ok` with boundary limits, `open`) and then a session;
//! - at most one wrong frame, last: bad end octet, unknown type, oversized, truncated, a body
//!   without a header, a heartbeat on a channel, an unknown method, a method cut short.
//!
//! Byte layouts are AMQP 0-9-1's (§4.2.3 frames, §4.2.5 field types with RabbitMQ's errata
//! letters, §4.2.6 content headers).

mod methods;
mod values;
use methods::*;
use values::*;

/// The fuzzer's bytes read as a stream of choices; past the end every choice is 0 (so every
/// input, even the empty one, makes a finite program).
pub(crate) struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Choices<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Choices<'a> {
        Choices { data, pos: 0 }
    }

    fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number in `0..n` (n ≥ 1).
    fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            usize::from(self.u8()) % n
        } else {
            usize::from(self.u16()) % n
        }
    }

    /// Up to `n` raw bytes (fewer at the end of the input).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }

    /// An integer biased to its boundaries: 0, 1 and `max` each one time in five.
    fn boundary<T: From<u8>>(&mut self, max: T, any: fn(&mut Self) -> T) -> T {
        match self.u8() % 5 {
            0 => T::from(0),
            1 => T::from(1),
            2 => max,
            _ => any(self),
        }
    }

    fn boundary_u16(&mut self) -> u16 {
        self.boundary(u16::MAX, Self::u16)
    }

    fn boundary_u32(&mut self) -> u32 {
        self.boundary(u32::MAX, Self::u32)
    }

    fn boundary_u64(&mut self) -> u64 {
        match self.u8() % 6 {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u64::from(self.u8()),
            _ => self.u64(),
        }
    }
}

/// Writes a frame: type, channel, size, payload, end octet.
fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
}

/// Appends a session: frames on a few channels (methods, contents, heartbeats), then maybe
/// one wrong frame. `frame_max` bounds the valid frames' payloads.
fn session(c: &mut Choices<'_>, out: &mut Vec<u8>, frame_max: usize, max_frames: usize) {
    let budget = frame_max.saturating_sub(8 + 64).max(64);
    let mut frames = 0;
    while !c.exhausted() && frames < max_frames {
        frames += 1;
        let channel = match c.u8() % 8 {
            0 => 0,
            1 => c.u16(),
            _ => 1 + c.below(3) as u16,
        };
        match c.u8() % 16 {
            0..=8 => {
                let payload = method(c, budget);
                frame(out, 1, channel, &payload);
            }
            9 => {
                // channel.open first, as a real client would (keeps sessions going deeper).
                frame(out, 1, channel, &[0, 20, 0, 10, 0]);
            }
            10..=12 => {
                // A publish with its content.
                frame(out, 1, channel, &[0, 60, 0, 40, 0, 0, 0, 1, b'q', 0]);
                let size = match c.u8() % 4 {
                    0 => 0,
                    1 => c.boundary_u64(),
                    _ => u64::from(c.u16() % 600),
                };
                let header = content_header(c, size, budget);
                frame(out, 2, channel, &header);
                let mut left = size.min(4 * frame_max as u64) as usize;
                while left > 0 && !c.exhausted() {
                    let n = left.min(frame_max.saturating_sub(8).max(1));
                    let chunk = vec![b'.'; n];
                    frame(out, 3, channel, &chunk);
                    left -= n;
                }
            }
            13 => {
                let size = u64::from(c.u8());
                let header = content_header(c, size, budget);
                frame(out, 2, channel, &header);
            }
            14 => {
                let n = usize::from(c.u8());
                let body = c.bytes(n).to_vec();
                frame(out, 3, channel, &body);
            }
            _ => frame(out, 8, 0, &[]),
        }
    }
    if c.u8().is_multiple_of(4) {
        wrong_frame(c, out, frame_max);
    }
}

/// Appends one frame a broker must refuse.
fn wrong_frame(c: &mut Choices<'_>, out: &mut Vec<u8>, frame_max: usize) {
    let channel = 1 + c.below(3) as u16;
    match c.u8() % 10 {
        0 => {
            // Bad frame-end octet.
            frame(out, 1, channel, &[0, 90, 0, 10]);
            if let Some(last) = out.last_mut() {
                *last = c.u8() & 0x7f;
            }
        }
        1 => frame(out, [0, 4, 7, 9, 255][c.below(5)], channel, &[1, 2, 3]),
        2 => {
            // Oversized: announces frame_max + 1 bytes of payload (and sends them).
            let payload = vec![0u8; frame_max.saturating_sub(7)];
            frame(out, 3, channel, &payload);
        }
        3 => {
            // Truncated: the size says more than follows (then end of input).
            out.extend_from_slice(&[1, 0, channel as u8, 0, 0, 1, 0, 0, 50]);
        }
        4 => frame(out, 3, channel, b"body without a header"),
        5 => frame(out, 8, channel, &[]),
        6 => {
            let mut p = c.u16().to_be_bytes().to_vec();
            p.extend_from_slice(&c.u16().to_be_bytes());
            frame(out, 1, channel, &p);
        }
        7 => {
            // A known method cut short.
            let mut p = method(c, 256);
            let keep = c.below(p.len().max(1));
            p.truncate(keep);
            frame(out, 1, channel, &p);
        }
        8 => {
            // A content header on a channel with no publish.
            let header = content_header(c, 3, 256);
            frame(out, 2, channel.wrapping_add(7), &header);
        }
        _ => {
            // A method in the middle of a content.
            frame(out, 1, channel, &[0, 60, 0, 40, 0, 0, 0, 0, 0]);
            let header = content_header(c, 10, 256);
            frame(out, 2, channel, &header);
            frame(out, 1, channel, &[0, 90, 0, 10]);
        }
    }
}

/// Frames for the frame decoder: a session at frame_max 131072.
pub(crate) fn frames_input(data: &[u8]) -> Vec<u8> {
    let mut c = Choices::new(data);
    let mut out = Vec::new();
    session(&mut c, &mut out, 131_072, 64);
    out
}

/// A whole client connection: protocol header, handshake, session, maybe a wrong frame.
pub(crate) fn connection_input(data: &[u8]) -> Vec<u8> {
    let mut c = Choices::new(data);
    let mut out = Vec::new();
    match c.u8() % 32 {
        0 => out.extend_from_slice(b"AMQP\x00\x00\x08\x00"),
        1 => out.extend_from_slice(c.bytes(8)),
        _ => out.extend_from_slice(b"AMQP\x00\x00\x09\x01"),
    }
    // start-ok: a grammar-made client-properties table (possibly deeply nested), mechanism,
    // response, locale. Before tune-ok the broker may limit frames to 4096 bytes; the table
    // may exceed that on purpose.
    let mut start_ok = vec![0, 10, 0, 11];
    let before_tune_budget = if c.u8().is_multiple_of(4) {
        120_000
    } else {
        4000
    };
    table(&mut c, &mut start_ok, 0, before_tune_budget);
    let (mechanism, response): (&[u8], Vec<u8>) = match c.u8() % 8 {
        0 => (b"AMQPLAIN", {
            let mut t = Vec::new();
            table(&mut c, &mut t, 0, 4000);
            t[4..].to_vec()
        }),
        1 => (b"EXTERNAL", Vec::new()),
        2 => (b"PLAIN", c.bytes(12).to_vec()),
        _ => (b"PLAIN", b"\0guest\0guest".to_vec()),
    };
    start_ok.push(mechanism.len() as u8);
    start_ok.extend_from_slice(mechanism);
    start_ok.extend_from_slice(&(response.len() as u32).to_be_bytes());
    start_ok.extend_from_slice(&response);
    start_ok.extend_from_slice(&[5]);
    start_ok.extend_from_slice(b"en_US");
    frame(&mut out, 1, 0, &start_ok);
    // tune-ok with boundary limits.
    let channel_max = match c.u8() % 4 {
        0 => c.boundary_u16(),
        _ => 2047,
    };
    let frame_max: u32 = match c.u8() % 8 {
        0 => c.boundary_u32(),
        1 => 4096,
        2 => 4095,
        _ => 131_072,
    };
    let heartbeat = if c.u8().is_multiple_of(8) {
        c.boundary_u16()
    } else {
        0
    };
    let mut tune_ok = vec![0, 10, 0, 31];
    tune_ok.extend_from_slice(&channel_max.to_be_bytes());
    tune_ok.extend_from_slice(&frame_max.to_be_bytes());
    tune_ok.extend_from_slice(&heartbeat.to_be_bytes());
    frame(&mut out, 1, 0, &tune_ok);
    let mut open = vec![0, 10, 0, 40];
    if c.u8().is_multiple_of(16) {
        shortstr(&mut c, &mut open);
    } else {
        open.extend_from_slice(&[1, b'/']);
    }
    open.extend_from_slice(&[0, 0]);
    frame(&mut out, 1, 0, &open);
    frame(&mut out, 1, 1, &[0, 20, 0, 10, 0]);
    let usable = match frame_max {
        0 => 131_072,
        n => (n as usize).clamp(4096, 131_072),
    };
    session(&mut c, &mut out, usable, 48);
    out
}

#[cfg(test)]
mod tests;
