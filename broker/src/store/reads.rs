//! Reading messages back from the segments: one record, or runs of adjacent records in one
//! `pread` (paging and recovery), waiting for the writer thread when a record is appended but
//! not written yet.

use super::*;

/// Decodes one whole enqueue record (header included), checking its length and checksum.
/// `None` when `record` is not a valid enqueue record.
pub(super) fn decode_enqueue(record: &Bytes) -> Option<StoredMessage> {
    if record.len() < RECORD_HEADER_LEN {
        return None;
    }
    let (header, payload) = record.split_at(RECORD_HEADER_LEN);
    let len_bytes = [header[0], header[1], header[2], header[3]];
    if u32::from_be_bytes(len_bytes) as usize != payload.len()
        || checksum(len_bytes, payload)
            != u32::from_be_bytes([header[4], header[5], header[6], header[7]])
    {
        return None;
    }
    let Ok(Record::Enqueue {
        queue,
        exchange,
        routing_key,
        properties,
        body,
    }) = Record::decode(payload)
    else {
        return None;
    };
    Some(StoredMessage {
        queue,
        exchange: String::from_utf8_lossy(exchange).into_owned(),
        routing_key: String::from_utf8_lossy(routing_key).into_owned(),
        // No copy: `slice_ref` shares `record`, and cannot panic because both slices were
        // decoded out of `record` itself.
        properties: record.slice_ref(properties),
        body: record.slice_ref(body),
    })
}

impl Store {
    /// Reads the message at `position` back from its segment (one `pread`, checksum verified).
    /// Valid once the enqueue returned and until its remove is committed: a record appended
    /// but not yet written by the writer thread is waited for. Blocking, but cheap when the
    /// segment is in the page cache.
    pub fn read(&self, position: Position) -> Result<StoredMessage, StoreError> {
        // `read_run` returns exactly one result per position: one here.
        self.read_run(&[position]).remove(0)
    }

    /// Reads many messages back, one result per position, in the given order. Records that
    /// lie back to back in one segment are read with one `pread` per run of up to
    /// [`READ_RUN_BYTES`]: that is how a queue drains a paged-out backlog, whose records are
    /// mostly adjacent. Same validity and blocking as [`read`](Self::read).
    pub fn read_many(&self, positions: &[Position]) -> Vec<Result<StoredMessage, StoreError>> {
        let mut out = Vec::with_capacity(positions.len());
        let mut start = 0;
        while start < positions.len() {
            let first = positions[start];
            let mut end = start + 1;
            let mut run_end = u64::from(first.offset) + u64::from(first.len);
            while let Some(next) = positions.get(end) {
                let next_end = run_end + u64::from(next.len);
                if next.segment != first.segment
                    || u64::from(next.offset) != run_end
                    || next_end - u64::from(first.offset) > READ_RUN_BYTES
                {
                    break;
                }
                run_end = next_end;
                end += 1;
            }
            out.extend(self.read_run(&positions[start..end]));
            start = end;
        }
        out
    }

    /// Reads `run`, records back to back in one segment (or a single record), with one
    /// `pread`; one result per record.
    pub(super) fn read_run(&self, run: &[Position]) -> Vec<Result<StoredMessage, StoreError>> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Vec::new();
        };
        let no_message = |position: &Position| StoreError::NoMessage {
            segment: position.segment,
            offset: position.offset,
        };
        let start = u64::from(first.offset);
        let end = u64::from(last.offset) + u64::from(last.len);
        let fail_all = |err: StoreError| {
            let mut out = vec![Err(err)];
            out.extend(run[1..].iter().map(|p| Err(no_message(p))));
            out
        };
        if let Err(err) = self.wait_written(first.segment, end) {
            return fail_all(err);
        }
        let file = match self.reader(first.segment) {
            Ok(file) => file,
            Err(err) => return fail_all(err),
        };
        let mut buf = vec![0; (end - start) as usize];
        if let Err(e) = file.read_exact_at(&mut buf, start) {
            return fail_all(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => no_message(first),
                _ => StoreError::io(segment_path(&self.shared.data_dir, first.segment), e),
            });
        }
        let bytes = Bytes::from(buf);
        run.iter()
            .map(|position| {
                let at = (u64::from(position.offset) - start) as usize;
                let record = bytes.slice(at..at + position.len as usize);
                decode_enqueue(&record).ok_or_else(|| no_message(position))
            })
            .collect()
    }

    /// Waits until the writer thread has written `segment` up to byte `end`. Fails at once
    /// for a range past everything appended (it will never be written) and when the writer
    /// has failed.
    pub(super) fn wait_written(&self, segment: u32, end: u64) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        let (appended_segment, appended_end) = state.append_point();
        if (segment, end) > (appended_segment, u64::from(appended_end)) {
            return Err(StoreError::NoMessage { segment, offset: 0 });
        }
        while (segment, end) > (state.written.0, u64::from(state.written.1)) {
            if let Some(cause) = &state.failed {
                return Err(StoreError::WriterFailed(cause.clone()));
            }
            if (segment, end) <= (state.refused_upto.0, u64::from(state.refused_upto.1)) {
                // Appended before a refused batch and not written: refused with it.
                return Err(StoreError::NoMessage { segment, offset: 0 });
            }
            state = self
                .shared
                .written_cv
                .wait_timeout(state, std::time::Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    pub(super) fn reader(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = readers.get(&segment) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.shared.data_dir, segment);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NoMessage { segment, offset: 0 },
            _ => StoreError::io(&path, e),
        })?;
        let file = Arc::new(file);
        readers.insert(segment, file.clone());
        Ok(file)
    }
}
