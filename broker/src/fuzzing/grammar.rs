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

    /// An integer biased to its boundaries.
    fn boundary_u16(&mut self) -> u16 {
        match self.u8() % 5 {
            0 => 0,
            1 => 1,
            2 => u16::MAX,
            _ => self.u16(),
        }
    }

    fn boundary_u32(&mut self) -> u32 {
        match self.u8() % 5 {
            0 => 0,
            1 => 1,
            2 => u32::MAX,
            _ => self.u32(),
        }
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

/// Words the short strings are mostly made of, so that names repeat and refer to each other.
const WORDS: [&[u8]; 12] = [
    b"",
    b"q",
    b"x",
    b"amq.direct",
    b"amq.fanout",
    b"amq.topic",
    b"amq.headers",
    b"amq.rabbitmq.reply-to",
    b"a.b",
    b"#",
    b"x-message-ttl",
    b"/",
];

/// Argument keys brokers interpret, so that tables carry meaningful keys.
const KEYS: [&[u8]; 14] = [
    b"x-message-ttl",
    b"x-expires",
    b"x-max-length",
    b"x-max-length-bytes",
    b"x-overflow",
    b"x-dead-letter-exchange",
    b"x-dead-letter-routing-key",
    b"x-max-priority",
    b"x-match",
    b"alternate-exchange",
    b"x-priority",
    b"capabilities",
    b"CC",
    b"BCC",
];

/// Writes a short string: a word, a boundary length, or raw bytes (any length 0..=255).
fn shortstr(c: &mut Choices<'_>, out: &mut Vec<u8>) {
    let bytes: Vec<u8> = match c.u8() % 8 {
        0..=3 => WORDS[c.below(WORDS.len())].to_vec(),
        4 => vec![b'n'; 255],
        5 => Vec::new(),
        _ => {
            let n = usize::from(c.u8());
            c.bytes(n).to_vec()
        }
    };
    out.push(bytes.len() as u8);
    out.extend_from_slice(&bytes);
}

fn longstr(c: &mut Choices<'_>, out: &mut Vec<u8>, budget: usize) {
    let n = match c.u8() % 4 {
        0 => 0,
        1 => usize::from(c.u8()),
        _ => usize::from(c.u16()).min(budget),
    };
    let bytes = c.bytes(n);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn key(c: &mut Choices<'_>, out: &mut Vec<u8>) {
    if c.u8().is_multiple_of(3) {
        shortstr(c, out);
    } else {
        let k = KEYS[c.below(KEYS.len())];
        out.push(k.len() as u8);
        out.extend_from_slice(k);
    }
}

/// How deep ordinary (recursively generated) tables and arrays go.
const MAX_RECURSIVE_DEPTH: u8 = 4;

/// Writes a field table (`u32` size, then entries), at most about `budget` bytes.
pub(crate) fn table(c: &mut Choices<'_>, out: &mut Vec<u8>, depth: u8, budget: usize) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let entries = match c.u8() % 4 {
        0 => 0,
        1 => 1,
        _ => c.below(8),
    };
    for _ in 0..entries {
        if out.len() - start >= budget {
            break;
        }
        key(c, out);
        let left = budget.saturating_sub(out.len() - start);
        value(c, out, depth, left);
    }
    let size = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes one field value: a type octet and its payload.
fn value(c: &mut Choices<'_>, out: &mut Vec<u8>, depth: u8, budget: usize) {
    match c.u8() % 21 {
        0 => {
            out.push(b't');
            out.push(c.u8());
        }
        1 => {
            out.push(b'b');
            out.push(c.u8());
        }
        2 => {
            out.push(b'B');
            out.push(c.u8());
        }
        3 => {
            out.push(b's');
            out.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        4 => {
            out.push(b'u');
            out.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        5 => {
            out.push(b'I');
            out.extend_from_slice(&c.boundary_u32().to_be_bytes());
        }
        6 => {
            out.push(b'i');
            out.extend_from_slice(&c.boundary_u32().to_be_bytes());
        }
        7 => {
            out.push(if c.bool() { b'l' } else { b'L' });
            out.extend_from_slice(&c.boundary_u64().to_be_bytes());
        }
        8 => {
            out.push(b'f');
            out.extend_from_slice(&c.u32().to_be_bytes());
        }
        9 => {
            out.push(b'd');
            out.extend_from_slice(&c.u64().to_be_bytes());
        }
        10 => {
            out.push(b'D');
            out.push(c.u8());
            out.extend_from_slice(&c.u32().to_be_bytes());
        }
        11 => {
            out.push(b'S');
            longstr(c, out, budget);
        }
        12 => {
            out.push(b'x');
            longstr(c, out, budget);
        }
        13 => {
            out.push(b'T');
            out.extend_from_slice(&c.boundary_u64().to_be_bytes());
        }
        14 => out.push(b'V'),
        15 if depth < MAX_RECURSIVE_DEPTH => {
            out.push(b'F');
            table(c, out, depth + 1, budget);
        }
        16 if depth < MAX_RECURSIVE_DEPTH => {
            out.push(b'A');
            array(c, out, depth + 1, budget);
        }
        17 | 18 => nest(c, out, budget),
        19 => {
            // A type octet no table format defines.
            out.push(
                *b"cgjkmnopqrvwyzCEGHJKMNOPQRWXYZ0!"
                    .get(c.below(32))
                    .unwrap_or(&b'?'),
            );
        }
        _ => {
            out.push(b'S');
            out.extend_from_slice(&[0, 0, 0, 1, b'v']);
        }
    }
}

fn array(c: &mut Choices<'_>, out: &mut Vec<u8>, depth: u8, budget: usize) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let items = c.below(6);
    for _ in 0..items {
        if out.len() - start >= budget {
            break;
        }
        let left = budget.saturating_sub(out.len() - start);
        value(c, out, depth, left);
    }
    let size = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes one value that is a nest of `depth` tables, arrays or both alternating (depth
/// chosen by the fuzzer, up to what fits in `budget`), written outside in without recursion.
///
/// ```text
/// table level: 'F' size:u32  0x01 'a'  <next level>     (7 bytes + inner)
/// array level: 'A' size:u32  <next level>               (5 bytes + inner)
/// innermost:   'F' 00 00 00 00   or   'A' 00 00 00 00
/// ```
fn nest(c: &mut Choices<'_>, out: &mut Vec<u8>, budget: usize) {
    let style = c.u8() % 3; // 0 tables, 1 arrays, 2 alternating
    let wanted = usize::from(c.u16());
    let is_table = |level: usize| match style {
        0 => true,
        1 => false,
        _ => level.is_multiple_of(2),
    };
    // The levels that fit: each costs 7 (table) or 5 (array) bytes, plus 5 for the innermost.
    let mut depth = 0;
    let mut used = 5;
    while depth < wanted {
        let cost = if is_table(depth) { 7 } else { 5 };
        if used + cost > budget {
            break;
        }
        used += cost;
        depth += 1;
    }
    // Sizes inside out: size[level] = bytes after that level's size field.
    let mut sizes = vec![0u32; depth];
    let mut inner = 5u32; // the innermost value
    for level in (0..depth).rev() {
        sizes[level] = if is_table(level) { inner + 2 } else { inner };
        inner = sizes[level] + 5;
    }
    out.reserve(used);
    for (level, size) in sizes.iter().enumerate() {
        if is_table(level) {
            out.push(b'F');
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&[1, b'a']);
        } else {
            out.push(b'A');
            out.extend_from_slice(&size.to_be_bytes());
        }
    }
    out.push(if is_table(depth) { b'F' } else { b'A' });
    out.extend_from_slice(&[0; 4]);
}

/// Writes a frame: type, channel, size, payload, end octet.
fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
}

/// Packs `bits` into octets, first bit lowest, as the spec packs consecutive bit fields.
fn bits(out: &mut Vec<u8>, bits: &[bool]) {
    for chunk in bits.chunks(8) {
        let mut octet = 0u8;
        for (i, b) in chunk.iter().enumerate() {
            if *b {
                octet |= 1 << i;
            }
        }
        out.push(octet);
    }
}

fn random_bits<const N: usize>(c: &mut Choices<'_>) -> [bool; N] {
    let v = c.u8();
    std::array::from_fn(|i| v & (1 << (i % 8)) != 0)
}

/// The payload of a client method: class id, method id, arguments. `budget` bounds the
/// tables; the method is one of every client-to-server method of 0-9-1 (plus RabbitMQ's).
pub(crate) fn method(c: &mut Choices<'_>, budget: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let head = |p: &mut Vec<u8>, class: u16, method: u16| {
        p.extend_from_slice(&class.to_be_bytes());
        p.extend_from_slice(&method.to_be_bytes());
    };
    let reserved_short = |p: &mut Vec<u8>| p.extend_from_slice(&[0, 0]);
    match c.u8() % 36 {
        // connection
        0 => {
            head(&mut p, 10, 11); // start-ok
            table(c, &mut p, 0, budget);
            shortstr(c, &mut p);
            longstr(c, &mut p, budget);
            shortstr(c, &mut p);
        }
        1 => {
            head(&mut p, 10, 21); // secure-ok
            longstr(c, &mut p, budget);
        }
        2 => {
            head(&mut p, 10, 31); // tune-ok
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            p.extend_from_slice(&c.boundary_u32().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        3 => {
            head(&mut p, 10, 40); // open
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        4 => {
            head(&mut p, 10, 50); // close
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            shortstr(c, &mut p);
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        5 => head(&mut p, 10, 51), // close-ok
        6 => {
            head(&mut p, 10, 60); // blocked (server to client; a client sending it is wrong)
            shortstr(c, &mut p);
        }
        7 => {
            head(&mut p, 10, 70); // update-secret
            longstr(c, &mut p, budget);
            shortstr(c, &mut p);
        }
        // channel
        8 => {
            head(&mut p, 20, 10); // open
            shortstr(c, &mut p);
        }
        9 => {
            head(&mut p, 20, 20); // flow
            bits(&mut p, &random_bits::<1>(c));
        }
        10 => {
            head(&mut p, 20, 21); // flow-ok
            bits(&mut p, &random_bits::<1>(c));
        }
        11 => {
            head(&mut p, 20, 40); // close
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            shortstr(c, &mut p);
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        12 => head(&mut p, 20, 41), // close-ok
        13 => {
            head(&mut p, 30, 10); // access.request
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<5>(c));
        }
        // exchange
        14 => {
            head(&mut p, 40, 10); // declare
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<5>(c));
            table(c, &mut p, 0, budget);
        }
        15 => {
            head(&mut p, 40, 20); // delete
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<2>(c));
        }
        16 | 17 => {
            head(&mut p, 40, if c.bool() { 30 } else { 40 }); // bind / unbind
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
            table(c, &mut p, 0, budget);
        }
        // queue
        18 => {
            head(&mut p, 50, 10); // declare
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<5>(c));
            table(c, &mut p, 0, budget);
        }
        19 => {
            head(&mut p, 50, 20); // bind
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
            table(c, &mut p, 0, budget);
        }
        20 => {
            head(&mut p, 50, 30); // purge
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        21 => {
            head(&mut p, 50, 40); // delete
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<3>(c));
        }
        22 => {
            head(&mut p, 50, 50); // unbind
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            table(c, &mut p, 0, budget);
        }
        // basic
        23 => {
            head(&mut p, 60, 10); // qos
            p.extend_from_slice(&c.boundary_u32().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            bits(&mut p, &random_bits::<1>(c));
        }
        24 => {
            head(&mut p, 60, 20); // consume
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<4>(c));
            table(c, &mut p, 0, budget);
        }
        25 => {
            head(&mut p, 60, 30); // cancel
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        26 | 27 => {
            head(&mut p, 60, 40); // publish
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<2>(c));
        }
        28 => {
            head(&mut p, 60, 70); // get
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        29..=31 => {
            let (id, nbits) = match c.u8() % 3 {
                0 => (80, 1),  // ack
                1 => (90, 1),  // reject
                _ => (120, 2), // nack
            };
            head(&mut p, 60, id);
            p.extend_from_slice(&c.boundary_u64().to_be_bytes());
            let b = random_bits::<2>(c);
            bits(&mut p, &b[..nbits]);
        }
        32 => {
            head(&mut p, 60, if c.bool() { 100 } else { 110 }); // recover-async / recover
            bits(&mut p, &random_bits::<1>(c));
        }
        33 => {
            head(&mut p, 85, 10); // confirm.select
            bits(&mut p, &random_bits::<1>(c));
        }
        _ => {
            head(&mut p, 90, [10, 20, 30][c.below(3)]); // tx.select / commit / rollback
        }
    }
    p
}

/// A content header payload (class 60): weight, body size, property flags, properties.
fn content_header(c: &mut Choices<'_>, body_size: u64, budget: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let class: u16 = if c.u8().is_multiple_of(16) {
        c.u16()
    } else {
        60
    };
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&body_size.to_be_bytes());
    let flags = c.u16() & !1; // bit 0 would announce a second flags word
    p.extend_from_slice(&flags.to_be_bytes());
    // content-type, content-encoding, headers, delivery-mode, priority, correlation-id,
    // reply-to, expiration, message-id, timestamp, type, user-id, app-id, cluster-id
    for bit in 0..14u16 {
        if flags & (1 << (15 - bit)) == 0 {
            continue;
        }
        match bit {
            2 => table(c, &mut p, 0, budget),
            3 | 4 => p.push(c.u8()),
            9 => p.extend_from_slice(&c.boundary_u64().to_be_bytes()),
            _ => shortstr(c, &mut p),
        }
    }
    p
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
