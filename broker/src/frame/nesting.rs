//! The nesting bound on field tables and arrays: an iterative pre-scan of every client payload
//! that `amq-protocol` would decode recursively, run before it does.
//!
//! Why: `amq-protocol`'s field-table parser recurses once per nested table or array (a nom
//! parser per level: ~9 KiB of stack per level in a debug build, measured). A table nested a few
//! thousand levels deep (7 bytes a level, well inside one frame) overflows a tokio worker's
//! 2 MiB stack and aborts the whole process, and before authentication at that: the
//! client-properties of `connection.start-ok` are a field table. Everything that later walks a
//! decoded value recursively (its `Drop`, `Clone`, `PartialEq` in headers-exchange matching,
//! `Debug`, the encoder writing it back out in a delivery or to the store, `x-death` handling)
//! is bounded by the same depth, because nothing deeper is ever decoded.
//!
//! The bound, [`MAX_NESTING_DEPTH`] = 64 levels (the outermost table is level 1): real clients
//! nest 2 (client capabilities) to 4 (`x-death`: headers, array, table, routing-keys array)
//! levels; 64 leaves room for any hand-built structure while keeping the decode of a maximal
//! table under a third of a 2 MiB stack in a debug build (the unit test below decodes, clones,
//! compares, formats, re-encodes and drops one on a 1 MiB thread). RabbitMQ decodes thousands
//! of levels (Erlang's process stacks live on the heap); we refuse them: a deeper method or
//! content header is a connection error, 501 FRAME_ERROR, like any other payload we cannot
//! decode (RabbitMQ drops the socket on a field table it cannot decode).
//!
//! What is scanned: the payloads that hold a field table (AMQP 0-9-1 section 4.2.6 grammar,
//! and section 4.2.5.5 for the table itself):
//! ```text
//! connection.start      10 10 | major u8 | minor u8 | server-properties table | ...
//! connection.start-ok   10 11 | client-properties table | ...
//! exchange.declare      40 10 | reserved u16 | exchange s | type s | bits u8 | arguments table
//! exchange.bind/unbind  40 30/40 | reserved u16 | destination s | source s | key s | bits u8 | arguments table
//! queue.declare         50 10 | reserved u16 | queue s | bits u8 | arguments table
//! queue.bind            50 20 | reserved u16 | queue s | exchange s | key s | bits u8 | arguments table
//! queue.unbind          50 50 | reserved u16 | queue s | exchange s | key s | arguments table
//! basic.consume         60 20 | reserved u16 | queue s | consumer-tag s | bits u8 | arguments table
//! content header        class u16 | weight u16 | size u64 | flags u16 | [content-type s] | [content-encoding s] | [headers table] | ...
//! field table           size u32 | (key s | type u8 | value)*
//! field array           size u32 | (type u8 | value)*
//! ```
//! (`s` is a short string: one length octet, then the bytes.) The AMQPLAIN response (a table
//! without its length prefix) goes through [`check_table_entries`]. Server-to-client methods
//! are scanned too (`connection.start`): `amq-protocol` decodes whatever method a client sends.
//!
//! The scan mirrors the parser's order and stops where the parser would stop: at the first
//! malformed byte it gives up (`Ok`), since the parser refuses the payload there without going
//! any deeper. So a payload passes exactly when the parser would never reach a level past the
//! bound.

/// The deepest nesting of field tables and arrays accepted from a client (the outermost table
/// counts as level 1); see the module doc for why 64.
pub(crate) const MAX_NESTING_DEPTH: usize = 64;

/// A payload holds field tables or arrays nested deeper than [`MAX_NESTING_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep;

/// What precedes the field table in a method's arguments.
#[derive(Clone, Copy)]
enum Field {
    /// A fixed number of bytes (integers, packed bits).
    Skip(usize),
    /// A short string.
    ShortString,
}

use Field::{ShortString as S, Skip};

/// The fields before the field table of the methods that carry one; `None` for the others.
fn fields_before_table(class_id: u16, method_id: u16) -> Option<&'static [Field]> {
    Some(match (class_id, method_id) {
        (10, 10) => &[Skip(2)],
        (10, 11) => &[],
        (40, 10) => &[Skip(2), S, S, Skip(1)],
        (40, 30) | (40, 40) => &[Skip(2), S, S, S, Skip(1)],
        (50, 10) => &[Skip(2), S, Skip(1)],
        (50, 20) => &[Skip(2), S, S, S, Skip(1)],
        (50, 50) => &[Skip(2), S, S, S],
        (60, 20) => &[Skip(2), S, S, Skip(1)],
        _ => return None,
    })
}

/// Checks a method frame's payload (class id onwards).
pub(crate) fn check_method(payload: &[u8]) -> Result<(), TooDeep> {
    let mut c = Scan::new(payload);
    let (Some(class_id), Some(method_id)) = (c.u16(), c.u16()) else {
        return Ok(());
    };
    let Some(fields) = fields_before_table(class_id, method_id) else {
        return Ok(());
    };
    for field in fields {
        let skipped = match field {
            Field::Skip(n) => c.skip(*n),
            Field::ShortString => c.short_string(),
        };
        if skipped.is_none() {
            return Ok(());
        }
    }
    check_table(c.rest())
}

/// Checks a content header frame's payload (class id onwards).
pub(crate) fn check_header(payload: &[u8]) -> Result<(), TooDeep> {
    let mut c = Scan::new(payload);
    // class, weight, body size.
    if c.skip(12).is_none() {
        return Ok(());
    }
    let Some(flags) = c.u16() else {
        return Ok(());
    };
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 && c.short_string().is_none() {
            return Ok(());
        }
    }
    check_table(c.rest())
}

/// Checks the field table (length-prefixed) at the start of `bytes`.
pub(crate) fn check_table(bytes: &[u8]) -> Result<(), TooDeep> {
    let mut c = Scan::new(bytes);
    match c.u32() {
        Some(len) => match c.take(len) {
            Some(entries) => check_table_entries(entries),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Checks the entries of a field table whose length prefix was already read (or, for
/// AMQPLAIN, never sent): `bytes` is the whole table body.
pub(crate) fn check_table_entries(bytes: &[u8]) -> Result<(), TooDeep> {
    // The open containers, innermost last: where each ends, and whether it is a table (entries
    // have keys) or an array. A fixed array: the depth is bounded, and the scan allocates
    // nothing.
    let mut open = [(0usize, false); MAX_NESTING_DEPTH];
    open[0] = (bytes.len(), true);
    let mut depth = 1;
    let mut c = Scan::new(bytes);
    while depth > 0 {
        let (end, is_table) = open[depth - 1];
        if c.pos == end {
            depth -= 1;
            continue;
        }
        // Reads of this container's entries stay inside it, as the parser's sub-slice does.
        c.end = end;
        if is_table && c.short_string().is_none() {
            return Ok(());
        }
        let Some(kind) = c.u8() else {
            return Ok(());
        };
        let fixed = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'S' | b'x' => match c.u32() {
                Some(len) => len as usize,
                None => return Ok(()),
            },
            b'F' | b'A' => {
                let Some(len) = c.u32() else {
                    return Ok(());
                };
                let Some(inner_end) = c.pos.checked_add(len as usize).filter(|e| *e <= end) else {
                    return Ok(());
                };
                if depth == MAX_NESTING_DEPTH {
                    return Err(TooDeep);
                }
                open[depth] = (inner_end, kind == b'F');
                depth += 1;
                continue;
            }
            // A type the parser does not know: it stops here.
            _ => return Ok(()),
        };
        if c.skip(fixed).is_none() {
            return Ok(());
        }
    }
    Ok(())
}

/// A bounds-checked reader over a payload; every read is `None` past `end`.
struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Scan<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            end: bytes.len(),
        }
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n as u32).map(|_| ())
    }

    fn take(&mut self, n: u32) -> Option<&'a [u8]> {
        let start = self.pos;
        let stop = start.checked_add(n as usize).filter(|s| *s <= self.end)?;
        self.pos = stop;
        Some(&self.bytes[start..stop])
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn short_string(&mut self) -> Option<()> {
        let len = self.u8()?;
        self.skip(usize::from(len))
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..self.end]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
    use amq_protocol::protocol::{basic, connection, exchange, queue, AMQPClass};
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::parsing::parse_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

    use super::*;

    /// A value nested `depth` levels deep (tables and arrays alternating when `mixed`), with a
    /// few scalars of every width at each level so the scan must skip them right.
    fn nested(depth: usize, mixed: bool) -> FieldTable {
        let scalars = |t: &mut FieldTable| {
            t.insert("b".into(), AMQPValue::ShortShortInt(-1));
            t.insert("s".into(), AMQPValue::ShortInt(2));
            t.insert("d".into(), AMQPValue::Double(0.5));
            t.insert(
                "D".into(),
                AMQPValue::DecimalValue(amq_protocol::types::DecimalValue { scale: 2, value: 7 }),
            );
            t.insert("S".into(), AMQPValue::LongString("F\0\0\0\x05".into()));
            t.insert("x".into(), AMQPValue::ByteArray(vec![b'A'; 3].into()));
            t.insert("V".into(), AMQPValue::Void);
        };
        let mut value = FieldTable::default();
        scalars(&mut value);
        for level in 1..depth {
            let mut outer = FieldTable::default();
            scalars(&mut outer);
            if mixed && level % 2 == 1 && level + 1 < depth {
                // An array holding the table: two levels at once.
                let mut array = FieldArray::default();
                array.push(AMQPValue::Timestamp(1));
                array.push(AMQPValue::FieldTable(value));
                outer.insert("a".into(), AMQPValue::FieldArray(array));
                value = outer;
                continue;
            }
            outer.insert("t".into(), AMQPValue::FieldTable(value));
            value = outer;
        }
        value
    }

    /// The nesting depth of a decoded value, computed recursively (test input is shallow
    /// enough for that).
    fn depth_of(table: &FieldTable) -> usize {
        fn value(v: &AMQPValue) -> usize {
            match v {
                AMQPValue::FieldTable(t) => depth_of(t),
                AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value).max().unwrap_or(0),
                _ => 0,
            }
        }
        1 + table.inner().values().map(value).max().unwrap_or(0)
    }

    fn table_bytes(table: &FieldTable) -> Vec<u8> {
        gen_field_table(table)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    /// A chain of tables `{"a": {"a": ...}}` built byte by byte (no recursion to build it).
    fn chain(depth: usize) -> Vec<u8> {
        let mut inner = vec![0, 0, 0, 0];
        for _ in 1..depth {
            let mut t = ((inner.len() + 3) as u32).to_be_bytes().to_vec();
            t.extend_from_slice(&[1, b'a', b'F']);
            t.extend_from_slice(&inner);
            inner = t;
        }
        inner
    }

    #[test]
    fn the_scan_agrees_with_the_decoded_depth() {
        for mixed in [false, true] {
            for depth in 1..=MAX_NESTING_DEPTH + 3 {
                let table = nested(depth, mixed);
                let real = depth_of(&table);
                let bytes = table_bytes(&table);
                let verdict = check_table(&bytes);
                assert_eq!(
                    verdict.is_ok(),
                    real <= MAX_NESTING_DEPTH,
                    "depth {real} (mixed {mixed})"
                );
            }
        }
        assert_eq!(check_table(&chain(MAX_NESTING_DEPTH)), Ok(()));
        assert_eq!(check_table(&chain(MAX_NESTING_DEPTH + 1)), Err(TooDeep));
        assert_eq!(check_table(&chain(100_000)), Err(TooDeep));
    }

    #[test]
    fn malformed_input_is_left_to_the_parser_which_refuses_it() {
        // Every prefix of a too-deep chain, and every single-byte corruption of a short one:
        // whenever the scan lets it through, the parser either refuses it or decodes a value
        // within the bound.
        let deep = chain(MAX_NESTING_DEPTH + 1);
        for cut in 0..deep.len() {
            let part = &deep[..cut];
            if check_table(part).is_ok() {
                assert!(parse_field_table(part).is_err(), "cut {cut}");
            }
        }
        let table = nested(MAX_NESTING_DEPTH + 1, true);
        let bytes = table_bytes(&table);
        for at in (0..bytes.len()).step_by(7) {
            for value in [0u8, b'F', b'A', 0xff] {
                let mut mutated = bytes.clone();
                mutated[at] = value;
                if check_table(&mutated).is_ok() {
                    if let Ok((_, t)) = parse_field_table(&mutated[..]) {
                        assert!(depth_of(&t) <= MAX_NESTING_DEPTH, "byte {at} = {value}");
                    }
                }
            }
        }
    }

    fn frame_payload(frame: &AMQPFrame) -> Vec<u8> {
        let bytes = gen_frame(frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write;
        bytes[7..bytes.len() - 1].to_vec()
    }

    #[test]
    fn every_method_with_a_table_and_the_content_header_are_scanned() {
        let mut outcomes = (0, 0);
        for depth in 1..=MAX_NESTING_DEPTH + 2 {
            let t = || nested(depth, true);
            let real = depth_of(&t());
            if !(MAX_NESTING_DEPTH - 1..=MAX_NESTING_DEPTH + 2).contains(&real) {
                continue;
            }
            if real <= MAX_NESTING_DEPTH {
                outcomes.0 += 1;
            } else {
                outcomes.1 += 1;
            }
            let methods = vec![
                AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: t(),
                    mechanisms: "PLAIN".into(),
                    locales: "en_US".into(),
                })),
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: t(),
                    mechanism: "PLAIN".into(),
                    response: "\0guest\0guest".into(),
                    locale: "en_US".into(),
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: "x".into(),
                    kind: "topic".into(),
                    arguments: t(),
                    ..Default::default()
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "k".into(),
                    nowait: true,
                    arguments: t(),
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "k".into(),
                    nowait: false,
                    arguments: t(),
                })),
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "q".into(),
                    durable: true,
                    arguments: t(),
                    ..Default::default()
                })),
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: "q".into(),
                    exchange: "amq.topic".into(),
                    routing_key: "a.#".into(),
                    nowait: false,
                    arguments: t(),
                })),
                AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: "q".into(),
                    exchange: "amq.topic".into(),
                    routing_key: "a.#".into(),
                    arguments: t(),
                })),
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: "q".into(),
                    consumer_tag: "c".into(),
                    no_ack: true,
                    arguments: t(),
                    ..Default::default()
                })),
            ];
            for method in methods {
                let payload = frame_payload(&AMQPFrame::Method(1, method.clone()));
                assert_eq!(
                    check_method(&payload).is_ok(),
                    real <= MAX_NESTING_DEPTH,
                    "{:?} at depth {real}",
                    (method.get_amqp_class_id(), method.get_amqp_method_id())
                );
            }
            for (content_type, encoding) in [(None, None), (Some("a/b"), Some("gzip"))] {
                let mut properties = basic::AMQPProperties::default()
                    .with_headers(t())
                    .with_priority(3);
                if let (Some(ct), Some(enc)) = (content_type, encoding) {
                    properties = properties
                        .with_content_type(ct.into())
                        .with_content_encoding(enc.into());
                }
                let header = AMQPFrame::Header(
                    1,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size: 1,
                        properties,
                    },
                );
                let payload = frame_payload(&header);
                assert_eq!(check_header(&payload).is_ok(), real <= MAX_NESTING_DEPTH);
            }
        }
        assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
        // Methods without tables pass untouched, whatever their bytes.
        assert_eq!(check_method(&[0, 60, 0, 40, b'F', 0xff]), Ok(()));
        assert_eq!(check_method(&[]), Ok(()));
        assert_eq!(check_header(&[0, 60]), Ok(()));
    }

    #[test]
    fn a_table_at_the_bound_is_decoded_and_used_in_a_fraction_of_a_worker_stack() {
        // Decoding (the recursive parser), cloning, comparing, formatting, re-encoding and
        // dropping a maximal table, on a thread with half a tokio worker's 2 MiB stack.
        let table = (1..=MAX_NESTING_DEPTH)
            .map(|d| nested(d, true))
            .find(|t| depth_of(t) == MAX_NESTING_DEPTH)
            .unwrap_or_else(|| nested(MAX_NESTING_DEPTH, false));
        assert_eq!(depth_of(&table), MAX_NESTING_DEPTH);
        let header = AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 0,
                properties: basic::AMQPProperties::default().with_headers(table),
            },
        );
        let bytes = gen_frame(&header)(WriteContext::from(Vec::new()))
            .unwrap()
            .write;
        let worked = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || {
                let (_, decoded) = parse_frame(&bytes[..]).unwrap();
                let copy = decoded.clone();
                assert_eq!(copy, decoded);
                let text = format!("{copy:?}");
                let again = gen_frame(&copy)(WriteContext::from(Vec::new()))
                    .unwrap()
                    .write;
                assert_eq!(again, bytes);
                drop(copy);
                drop(decoded);
                text.len()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(worked > 0);
    }

    #[test]
    fn amqplain_entries_are_scanned_without_a_length_prefix() {
        let deep = chain(MAX_NESTING_DEPTH + 1);
        assert_eq!(check_table_entries(&deep[4..]), Err(TooDeep));
        let ok = chain(MAX_NESTING_DEPTH);
        assert_eq!(check_table_entries(&ok[4..]), Ok(()));
    }
}
