//! Field values as the grammar writes them: short and long strings drawn mostly from a small
//! vocabulary (so names repeat and refer to each other), field tables and arrays of every value
//! type, nested to a bounded depth, and deliberately deep nesting.

use super::*;

/// Words the short strings are mostly made of, so that names repeat and refer to each other.
pub(super) const WORDS: [&[u8]; 12] = [
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
pub(super) const KEYS: [&[u8]; 14] = [
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
pub(super) fn shortstr(c: &mut Choices<'_>, out: &mut Vec<u8>) {
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

pub(super) fn longstr(c: &mut Choices<'_>, out: &mut Vec<u8>, budget: usize) {
    let n = match c.u8() % 4 {
        0 => 0,
        1 => usize::from(c.u8()),
        _ => usize::from(c.u16()).min(budget),
    };
    let bytes = c.bytes(n);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub(super) fn key(c: &mut Choices<'_>, out: &mut Vec<u8>) {
    if c.u8().is_multiple_of(3) {
        shortstr(c, out);
    } else {
        let k = KEYS[c.below(KEYS.len())];
        out.push(k.len() as u8);
        out.extend_from_slice(k);
    }
}

/// How deep ordinary (recursively generated) tables and arrays go.
pub(super) const MAX_RECURSIVE_DEPTH: u8 = 4;

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
pub(super) fn value(c: &mut Choices<'_>, out: &mut Vec<u8>, depth: u8, budget: usize) {
    let kind = c.u8() % 21;
    match kind {
        // 't' boolean, 'b' short-short-int, 'B' short-short-uint: one octet
        0..=2 => {
            out.push(b"tbB"[usize::from(kind)]);
            out.push(c.u8());
        }
        // 's' short-int, 'u' short-uint
        3 | 4 => {
            out.push(b"su"[usize::from(kind - 3)]);
            out.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        // 'I' long-int, 'i' long-uint
        5 | 6 => {
            out.push(b"Ii"[usize::from(kind - 5)]);
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
        // 'S' long string, 'x' byte array
        11 | 12 => {
            out.push(b"Sx"[usize::from(kind - 11)]);
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

pub(super) fn array(c: &mut Choices<'_>, out: &mut Vec<u8>, depth: u8, budget: usize) {
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
pub(super) fn nest(c: &mut Choices<'_>, out: &mut Vec<u8>, budget: usize) {
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
