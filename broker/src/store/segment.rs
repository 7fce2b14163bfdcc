//! Segment files: naming, the file header, and the scan that validates a segment's records on
//! recovery (telling a torn tail from corruption).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::record::{checksum, Record, MAX_RECORD_LEN, RECORD_HEADER_LEN};
use super::StoreError;

/// A segment file starts with this header, then holds records back to back (see
/// [`Record`] for their layout) up to the configured segment size; a single record larger than
/// that gets a segment of its own.
///
/// 1. Magic `b"LPSG"` [4 bytes].
/// 2. Format version as big-endian u32, currently 1 [4 bytes].
///
/// Segments are named `segments/<number>.seg`, the number zero-padded to 10 digits; numbers
/// only grow, so a [`super::Position`] never names two records.
pub(crate) const SEGMENT_HEADER: [u8; 8] = *b"LPSG\x00\x00\x00\x01";

/// The directory holding the segment files.
pub(crate) fn segments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("segments")
}

/// The file of segment `number`.
pub(crate) fn segment_path(data_dir: &Path, number: u32) -> PathBuf {
    segments_dir(data_dir).join(format!("{number:010}.seg"))
}

/// Segment numbers present on disk, ascending. Files that are not segments are left alone.
pub(crate) fn list_segments(data_dir: &Path) -> Result<Vec<u32>, StoreError> {
    let dir = segments_dir(data_dir);
    let mut numbers = Vec::new();
    let entries = fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|name| name.strip_suffix(".seg"))
            .filter(|stem| stem.len() == 10)
            .and_then(|stem| stem.parse::<u32>().ok());
        match number {
            Some(number) => numbers.push(number),
            None => tracing::warn!(file = ?entry.path(), "ignoring a file that is not a segment"),
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// fsyncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// How a segment scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Length of the valid prefix: the header and every whole, checksummed record.
    pub(crate) valid_len: u64,
    /// The file's length; bytes past `valid_len` are a torn tail to truncate.
    pub(crate) file_len: u64,
}

/// Reads segment `path` and calls `visit(offset, record length, record)` for each record in
/// order.
///
/// In the last segment (`is_last`), a bad record at the end is a torn tail — the write that a
/// crash interrupted — and the scan stops before it: a record cut short by end of file, or a
/// record with a bad length or checksum followed only by zero bytes (blocks the file system
/// allocated but never wrote). Anything else that does not decode, and any bad record in an
/// earlier segment, is [`StoreError::CorruptSegment`]: good data may follow, so nothing is
/// dropped.
///
/// Not detected: a bit flip in the length field of a middle record of the last segment that
/// makes the record seem to run past end of file looks exactly like a torn tail.
pub(crate) fn scan(
    path: &Path,
    is_last: bool,
    mut visit: impl FnMut(u32, u32, Record<'_>),
) -> Result<ScanEnd, StoreError> {
    let io_err = |e| StoreError::io(path, e);
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let corrupt = |offset, reason| StoreError::CorruptSegment {
        path: path.to_owned(),
        offset,
        reason,
    };

    let mut header = [0u8; SEGMENT_HEADER.len()];
    if file_len < header.len() as u64 {
        if is_last {
            return Ok(ScanEnd {
                valid_len: 0,
                file_len,
            });
        }
        return Err(corrupt(0, "truncated segment header"));
    }
    reader.read_exact(&mut header).map_err(io_err)?;
    if header != SEGMENT_HEADER {
        if is_last && header == [0; 8] && zeros_from(&mut reader, 8).map_err(io_err)? {
            return Ok(ScanEnd {
                valid_len: 0,
                file_len,
            });
        }
        return Err(corrupt(0, "bad segment header"));
    }

    // Reused for every payload: the scan allocates once per segment, not per record.
    let mut payload = Vec::new();
    let mut offset = SEGMENT_HEADER.len() as u64;
    while offset < file_len {
        let remaining = file_len - offset;
        let torn = |reason| {
            if is_last {
                Ok(ScanEnd {
                    valid_len: offset,
                    file_len,
                })
            } else {
                Err(corrupt(offset, reason))
            }
        };
        if remaining < RECORD_HEADER_LEN as u64 {
            return torn("truncated record header");
        }
        let mut record_header = [0u8; RECORD_HEADER_LEN];
        reader.read_exact(&mut record_header).map_err(io_err)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = record_header;
        let len_bytes = [l0, l1, l2, l3];
        let payload_len = u64::from(u32::from_be_bytes(len_bytes));
        let record_len = RECORD_HEADER_LEN as u64 + payload_len;
        if payload_len == 0 || record_len > MAX_RECORD_LEN {
            // A zero length is where unwritten (zero-filled) blocks begin.
            if is_last
                && record_header == [0; 8]
                && zeros_from(&mut reader, offset + 8).map_err(io_err)?
            {
                return torn("bad record length");
            }
            return Err(corrupt(offset, "bad record length"));
        }
        if record_len > remaining {
            return torn("truncated record");
        }
        // `record_len <= MAX_RECORD_LEN` (512 MiB) fits in usize on every supported target.
        payload.resize(payload_len as usize, 0);
        reader.read_exact(&mut payload).map_err(io_err)?;
        if checksum(len_bytes, &payload) != u32::from_be_bytes([c0, c1, c2, c3]) {
            if is_last && zeros_from(&mut reader, offset + record_len).map_err(io_err)? {
                return torn("checksum mismatch");
            }
            return Err(corrupt(offset, "checksum mismatch"));
        }
        let record = Record::decode(&payload).map_err(|malformed| corrupt(offset, malformed.0))?;
        // Offsets and lengths fit in u32: segments are created below 4 GiB (the configured size
        // is capped at 1 GiB, plus at most one record of MAX_RECORD_LEN).
        visit(offset as u32, record_len as u32, record);
        offset += record_len;
    }
    Ok(ScanEnd {
        valid_len: offset,
        file_len,
    })
}

/// True when every byte from `from` to end of file is zero.
fn zeros_from(reader: &mut BufReader<File>, from: u64) -> io::Result<bool> {
    reader.seek(SeekFrom::Start(from))?;
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
