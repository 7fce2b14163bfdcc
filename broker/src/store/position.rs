//! `Position`: where a message record lives in the segment log; the in-memory index entry of a
//! persistent message, and its identity in the store.

use std::fmt;

/// The location of one enqueue record: segment number, byte offset and record length.
///
/// A position is unique for the life of the data directory (segment numbers only grow and a
/// segment is never rewritten), so it doubles as the persistent message's id: acks
/// ([`super::Store::remove`]) name the message by its position. At 12 bytes it is the broker's
/// per-message cost of keeping a body on disk instead of in memory (the store adds 4
/// bytes per live message for its own liveness set).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment number (the file `segments/<segment>.seg`).
    pub segment: u32,
    /// Byte offset of the record's first byte (its length field) in the segment.
    pub offset: u32,
    /// Whole record length in bytes, header included.
    pub len: u32,
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}+{}", self.segment, self.offset, self.len)
    }
}
