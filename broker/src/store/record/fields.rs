//! The field encoding inside record payloads: short strings and tables with their lengths,
//! fixed-width integers, and the record checksum (CRC-32 over the length and the payload).
//! The snapshot (`super::super::definitions`) writes its shortstrs and tables with the same
//! `put_shortstr` and `put_table`.

use super::*;

/// True when `s` fits a shortstr (at most 255 bytes): the store refuses longer names rather
/// than truncate them.
pub(crate) fn fits_shortstr(s: &str) -> bool {
    s.len() <= 255
}

pub(super) fn str_len(s: &str) -> u64 {
    1 + s.len() as u64
}

pub(super) fn table_len(table: &[u8]) -> u64 {
    4 + table.len() as u64
}

/// Writes `s` as a shortstr: its length as u8, then its bytes.
pub(crate) fn put_shortstr(out: &mut Vec<u8>, s: &str) {
    // Names are checked before they get here (`fits_shortstr`, by the appender; a snapshot
    // holds only names that were). Truncating rather than wrapping the length keeps a bug from
    // making the rest of a record or snapshot unreadable.
    let len = s.len().min(255);
    out.push(len as u8);
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// Writes `table` (an AMQP field table's encoded bytes) as a table: its length as u32, then
/// its bytes.
pub(crate) fn put_table(out: &mut Vec<u8>, table: &[u8]) {
    out.extend_from_slice(&(table.len() as u32).to_be_bytes());
    out.extend_from_slice(table);
}

/// A cursor over a topology record's fields.
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl<'a> Fields<'a> {
    pub(super) fn u8(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(Malformed("topology record too short"))?;
        self.0 = rest;
        Ok(b)
    }

    pub(super) fn shortstr(&mut self) -> Result<&'a str, Malformed> {
        let (s, rest) = take_shortstr(self.0).ok_or(Malformed("topology record too short"))?;
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| Malformed("name is not UTF-8"))
    }

    pub(super) fn table(&mut self) -> Result<&'a [u8], Malformed> {
        let (len, rest) = take_u32(self.0).ok_or(Malformed("topology record too short"))?;
        if len as usize > rest.len() {
            return Err(Malformed("table length exceeds the record"));
        }
        let (table, rest) = rest.split_at(len as usize);
        self.0 = rest;
        Ok(table)
    }
}

/// The record checksum: CRC-32 over the length field, then the payload.
pub(crate) fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

pub(super) fn take_shortstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    (usize::from(len) <= rest.len()).then(|| rest.split_at(usize::from(len)))
}

pub(super) fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

pub(super) fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}
