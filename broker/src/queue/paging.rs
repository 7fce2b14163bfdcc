//! Paging: a durable queue's persistent messages past the memory budget keep only an index
//! entry; their bodies are read back from the store in runs when they near the head, and
//! recovered messages are restored at start.

use super::*;

/// Most paged-out messages read back from the store in one batch.
pub(super) const READ_AHEAD_MESSAGES: usize = 512;

/// Body bytes after which a read-back batch stops growing (one message at least).
pub(super) const READ_AHEAD_BYTES: u64 = 2 * 1024 * 1024;

/// The store a durable queue reports to, and the vhost it is named in there.
#[derive(Debug)]
pub(crate) struct QueuePersistence {
    /// The vhost's store (shared by all its queues).
    pub(crate) store: Arc<dyn Persistence>,
    /// The vhost's name.
    pub(crate) vhost: String,
}

impl Queue {
    /// True when persistent messages routed here go to the store.
    pub(crate) fn is_persisted(&self) -> bool {
        self.persistence.is_some()
    }

    /// `qm` left this queue for good (acked, consumed without ack, rejected without requeue,
    /// expired, dropped by a length limit): the store forgets it.
    pub(crate) fn forget(&self, qm: &QueuedMessage) {
        self.forget_seq(qm.seq, qm.message.is_persistent());
    }

    pub(crate) fn forget_seq(&self, seq: u64, persistent: bool) {
        if let Some(p) = &self.persistence {
            if persistent {
                p.store.remove(&p.vhost, &self.name, seq);
            }
        }
    }

    /// [`forget_seq`](Self::forget_seq) of a dead letter whose copies were appended after the
    /// store's refusal count read `refusals` (see `persistence::Persistence::remove_moved`).
    pub(crate) fn forget_moved_seq(&self, seq: u64, persistent: bool, refusals: u64) {
        if let Some(p) = &self.persistence {
            if persistent {
                p.store.remove_moved(&p.vhost, &self.name, seq, refusals);
            }
        }
    }

    /// True when this queue's persistent bodies can be paged out (durable, with a store that
    /// reads them back).
    pub(super) fn can_page(&self) -> bool {
        self.persistence
            .as_ref()
            .is_some_and(|p| p.store.can_page())
    }

    /// Drops the body of ready message `seq` from memory if the memory budget says so; its
    /// index entry stays. Call only once the message's enqueue has reached the store (after
    /// `persistence::Persistence::enqueue`), so that it can be read back.
    pub(crate) fn page_out(&self, seq: u64) {
        if !self.can_page() || !self.memory.should_page() {
            return;
        }
        let mut st = self.lock();
        for list in st.ready.iter_mut() {
            // Almost always the newest message of its level.
            let index = match list.back() {
                Some(last) if last.seq == seq => Some(list.len() - 1),
                _ => list.binary_search_by_key(&seq, |m| m.seq).ok(),
            };
            if let Some(index) = index {
                let rm = &mut list[index];
                if rm.message.as_ref().is_some_and(|m| m.is_persistent()) {
                    // The message gives its memory back when its last holder drops it.
                    rm.message = None;
                }
                return;
            }
        }
    }

    /// Reads paged-out messages at the head of `level` back from the store: a run of up to
    /// [`READ_AHEAD_MESSAGES`] messages or [`READ_AHEAD_BYTES`] bytes, in one batch, so that
    /// draining a paged backlog costs one store read per batch, not per message. Blocking
    /// (`pread`s, normally served by the page cache) under the queue lock.
    pub(super) fn page_in(&self, st: &mut QueueState, level: usize) {
        let Some(p) = &self.persistence else { return };
        let mut seqs = Vec::new();
        let mut bytes = 0u64;
        for rm in st.ready[level].iter() {
            if rm.message.is_some()
                || seqs.len() >= READ_AHEAD_MESSAGES
                || (bytes >= READ_AHEAD_BYTES && !seqs.is_empty())
            {
                break;
            }
            seqs.push(rm.seq);
            bytes += u64::from(rm.size);
        }
        if seqs.is_empty() {
            return;
        }
        let account: Arc<dyn Account> = self.memory.clone();
        let loaded = p.store.read(&p.vhost, &self.name, &seqs, &account);
        for (rm, message) in st.ready[level].iter_mut().zip(loaded) {
            if let Some(message) = message {
                rm.message = Some(message);
            }
        }
    }

    /// The message of a ready entry taken out of the queue, read back from the store if it
    /// was paged out. `None` (logged) if the store cannot produce it.
    pub(super) fn message_of(&self, rm: &ReadyMessage) -> Option<Arc<Message>> {
        if let Some(message) = &rm.message {
            return Some(message.clone());
        }
        let p = self.persistence.as_ref()?;
        let account: Arc<dyn Account> = self.memory.clone();
        let message = p
            .store
            .read(&p.vhost, &self.name, &[rm.seq], &account)
            .pop()
            .flatten();
        if message.is_none() {
            tracing::error!(queue = %self.name, seq = rm.seq, "a paged-out message cannot be read back from the store");
        }
        message
    }

    /// Puts a message recovered from the store back at the tail, marked redelivered (it may
    /// have reached a consumer before the restart). Returns its new sequence number. TTLs
    /// restart from now.
    pub(crate) fn restore(&self, message: Arc<Message>) -> u64 {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let ttl = match (self.config.message_ttl, message.expiration_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A TTL too large for the clock never expires (no overflow panic).
        let expires_at = ttl.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
        st.insert(
            &self.memory,
            QueuedMessage {
                seq,
                message,
                redelivered: true,
                expires_at,
            },
        );
        if expires_at.is_some() {
            self.wake.notify_one();
        }
        seq
    }
}
