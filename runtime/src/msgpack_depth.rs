//! A bound on how deeply a MessagePack body may nest, checked before anything decodes it.
//!
//! serde decodes nested data by recursion: each array or map level of a body costs one or more
//! stack frames of the decoder and the visitor (3-4 KiB per level for an untagged enum in a
//! debug build, measured), and the decoded value is dropped by recursion too. A body of a few
//! kilobytes nesting 1,000 levels overflows a tokio worker thread's 2 MiB stack in a debug
//! build, which aborts the whole process (rmp-serde's own limit, 1,024 levels, is too deep for
//! that, and it does not count levels entered through enum variants). So every body a worker
//! or a caller decodes is first walked by [`check`], an iterative scan (no recursion, one pass,
//! O(bytes)) that measures the nesting of the first MessagePack value in the body and refuses it
//! past [`MAX_DEPTH`] levels. It does not validate anything else: a truncated or malformed body
//! is left to the decoder, which reports it.
//!
//! The limit is the one serde_json applies to JSON (128), far below what a debug build's
//! worker thread survives (about 500 levels of the costliest shape measured), and far above
//! what an RPC argument list needs.

/// The deepest nesting of arrays, maps and extension values a Lepus body may have. The
/// arguments array itself is level 1; a struct argument (a map) inside it is level 2.
pub const MAX_DEPTH: usize = 128;

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    /// The limit that was exceeded.
    pub(crate) max: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MessagePack nested deeper than {} levels (the decoder's limit)",
            self.max
        )
    }
}

/// Walks the first MessagePack value of `body` and fails when it nests deeper than `max`
/// levels. Malformed or truncated input is not an error here (the decoder reports it).
pub(crate) fn check(body: &[u8], max: usize) -> Result<(), TooDeep> {
    // Items still to read in each open array or map (a map of n entries holds 2n items); the
    // stack never grows past `max` entries, since one more level is refused.
    let mut open: Vec<u64> = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(&marker) = body.get(at) else {
            return Ok(()); // truncated: the decoder says so
        };
        at += 1;
        let (items, skip): (u64, usize) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * u64::from(marker & 0x0f), 0),
            0x90..=0x9f => (u64::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
            0xc1 => return Ok(()), // never used: the decoder refuses it
            0xc4 | 0xd9 => (0, read_len(body, &mut at, 1)),
            0xc5 | 0xda => (0, read_len(body, &mut at, 2)),
            0xc6 | 0xdb => (0, read_len(body, &mut at, 4)),
            // ext 8/16/32: length, then a type byte, then the data
            0xc7 => (0, read_len(body, &mut at, 1).saturating_add(1)),
            0xc8 => (0, read_len(body, &mut at, 2).saturating_add(1)),
            0xc9 => (0, read_len(body, &mut at, 4).saturating_add(1)),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 => (0, 8),
            // fixext 1/2/4/8/16: a type byte, then the data
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (read_len(body, &mut at, 2) as u64, 0),
            0xdd => (read_len(body, &mut at, 4) as u64, 0),
            0xde => (2 * read_len(body, &mut at, 2) as u64, 0),
            0xdf => (2 * read_len(body, &mut at, 4) as u64, 0),
        };
        at = at.saturating_add(skip);
        let container = matches!(marker, 0x80..=0x9f | 0xdc..=0xdf);
        if container {
            // Even an empty array or map is one level of recursion for the decoder.
            if open.len() >= max {
                return Err(TooDeep { max });
            }
            if items > 0 {
                open.push(items);
                continue;
            }
        }
        // One item of the innermost open container is complete; close those that are done.
        loop {
            match open.last_mut() {
                None => return Ok(()), // the first value is complete
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
        if at >= body.len() {
            return Ok(()); // truncated: the decoder says so
        }
    }
}

/// Reads a big-endian length of `width` bytes at `at` (0 when the body ends first; the decoder
/// then reports the truncation).
fn read_len(body: &[u8], at: &mut usize, width: usize) -> usize {
    let Some(bytes) = body.get(*at..at.saturating_add(width)) else {
        *at = body.len();
        return 0;
    };
    *at += width;
    bytes
        .iter()
        .fold(0usize, |len, &b| (len << 8) | usize::from(b))
}

/// A body `depth` levels deep: `depth` nested one-element arrays around `1` (for the tests of
/// this module and of `envelope`).
#[cfg(test)]
pub(crate) fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut body = vec![0x91; depth];
    body.push(0x01);
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn flat_bodies_pass() {
        assert_eq!(check(&[0x91, 0x1e], MAX_DEPTH), Ok(()));
        assert_eq!(check(&[0x90], MAX_DEPTH), Ok(()));
        assert_eq!(check(&[], MAX_DEPTH), Ok(()));
        // a str8, a bin16 and a map with one entry, in one array
        let body = [
            0x93, 0xd9, 0x02, b'h', b'i', 0xc5, 0x00, 0x01, 0xff, 0x81, 0xa1, b'k', 0x07,
        ];
        assert_eq!(check(&body, 2), Ok(()));
        assert_eq!(check(&body, 1), Err(TooDeep { max: 1 }));
    }

    #[test]
    fn the_limit_is_exact() {
        assert_eq!(check(&nested_arrays(MAX_DEPTH), MAX_DEPTH), Ok(()));
        assert!(check(&nested_arrays(MAX_DEPTH + 1), MAX_DEPTH).is_err());
        assert!(check(&nested_arrays(100_000), MAX_DEPTH).is_err());
        // empty containers count: [[[]]] is three levels
        assert_eq!(check(&[0x91, 0x91, 0x90], 3), Ok(()));
        assert!(check(&[0x91, 0x91, 0x90], 2).is_err());
    }

    #[test]
    fn siblings_do_not_add_up() {
        // [[1], [1], [1], ...] 1,000 times: depth 2
        let mut body = vec![0xdc, 0x03, 0xe8];
        for _ in 0..1000 {
            body.extend_from_slice(&[0x91, 0x01]);
        }
        assert_eq!(check(&body, 2), Ok(()));
    }

    #[test]
    fn maps_and_extensions_nest_too() {
        // {"a": {"a": ...}} 200 deep
        let mut body = Vec::new();
        for _ in 0..200 {
            body.extend_from_slice(&[0x81, 0xa1, b'a']);
        }
        body.push(0xc0);
        assert!(check(&body, MAX_DEPTH).is_err());
        // an ext value is a leaf: its bytes are skipped, whatever they look like
        let mut ext = vec![0x91, 0xc7, 0x05, 0x01];
        ext.extend_from_slice(&[0x91; 5]);
        assert_eq!(check(&ext, 1), Ok(()));
    }

    #[test]
    fn truncated_and_huge_claims_end_without_error() {
        // an array32 claiming 4 billion items, with none there
        assert_eq!(check(&[0xdd, 0xff, 0xff, 0xff, 0xff], MAX_DEPTH), Ok(()));
        // a str32 claiming more bytes than there are
        assert_eq!(
            check(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'x'], MAX_DEPTH),
            Ok(())
        );
        assert_eq!(check(&[0xc1], MAX_DEPTH), Ok(()));
    }
}
