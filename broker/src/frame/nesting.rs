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

use super::big_endian::BigEndianReader;

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
        Some(len) => match c.take(len as usize) {
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
        self.take(n).map(|_| ())
    }

    fn short_string(&mut self) -> Option<()> {
        let len = self.u8()?;
        self.skip(usize::from(len))
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..self.end]
    }
}

impl<'a> BigEndianReader<'a> for Scan<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let start = self.pos;
        let stop = start.checked_add(n).filter(|s| *s <= self.end)?;
        self.pos = stop;
        Some(&self.bytes[start..stop])
    }
}

#[cfg(test)]
mod tests;
