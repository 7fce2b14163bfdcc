//! What a channel reports to the management API and Prometheus, kept in atomics the
//! connection task updates: its publishing mode, the publishes whose confirm waits for the
//! store, and what an open transaction has buffered.

use std::sync::atomic::Ordering;

use super::{ChannelMode, ChannelShared, TxOp};

impl ChannelShared {
    /// The publishing mode (for the management API).
    pub(crate) fn mode(&self) -> ChannelMode {
        match self.mode.load(Ordering::Acquire) {
            1 => ChannelMode::Confirm,
            2 => ChannelMode::Transactional,
            _ => ChannelMode::Plain,
        }
    }

    /// Records the publishing mode (the connection task, on `confirm.select`/`tx.select`).
    pub(crate) fn set_mode(&self, mode: ChannelMode) {
        self.mode.store(mode as u8, Ordering::Release);
    }

    /// Records how many publishes wait for the store before their confirm (the connection
    /// task, whenever [`ConfirmState::pending_store`] changes).
    pub(crate) fn set_unconfirmed(&self, pending_store: usize) {
        let n = u32::try_from(pending_store).unwrap_or(u32::MAX);
        self.unconfirmed.store(n, Ordering::Relaxed);
    }

    /// Publishes whose confirm waits for the store (`messages_unconfirmed`).
    pub(crate) fn unconfirmed(&self) -> u32 {
        self.unconfirmed.load(Ordering::Relaxed)
    }

    /// Records one more operation buffered by the transaction (the connection task).
    pub(crate) fn note_uncommitted(&self, op: &TxOp) {
        let counter = match op {
            TxOp::Publish(_) => &self.uncommitted_messages,
            TxOp::Ack(..) | TxOp::Nack(..) => &self.uncommitted_acks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The transaction's buffer was applied or dropped (`tx.commit`, `tx.rollback`).
    pub(crate) fn clear_uncommitted(&self) {
        self.uncommitted_messages.store(0, Ordering::Relaxed);
        self.uncommitted_acks.store(0, Ordering::Relaxed);
    }

    /// Publishes and acks buffered by the open transaction (`messages_uncommitted`,
    /// `acks_uncommitted`).
    pub(crate) fn uncommitted(&self) -> (u32, u32) {
        (
            self.uncommitted_messages.load(Ordering::Relaxed),
            self.uncommitted_acks.load(Ordering::Relaxed),
        )
    }
}
