//! Which read-buffer block a body slice pins, and its charge to the memory accounting.
//!
//! A body that arrives in one frame is kept as a slice of the connection's read buffer (no
//! copy: the fast path). A slice keeps its whole block allocated (64 KiB or more: `BytesMut`
//! allocates a new block when the frames cut out of the old one are still referenced), so a
//! 1-byte body can hold 128 KiB. The memory accounting must count the block, not the byte:
//! every message with such a body shares one charge of its block's size (an `Arc<Held>`),
//! made when the first of them is built and given back when the last of them is dropped.
//!
//! A block is recognised by where it ends (`as_ptr() + capacity()`): cutting frames off the
//! front moves the start, not the end; `BytesMut` moves to a new allocation only by
//! reserving, which changes the end (or reclaims the same allocation when nothing else
//! refers to it: the same block, charged or not as before). The size charged is the capacity
//! seen when the end changed, right after the read that filled the new block (a few bytes
//! less than the allocation if frames were cut before that read; never more).

use std::sync::{Arc, Weak};

use bytes::BytesMut;

use crate::message::{Account, Held};

/// The connection's current read block and its charge, if a message holds it.
#[derive(Debug)]
pub(crate) struct ReadBlocks {
    /// Where the messages' charges go (the broker's memory accounting).
    account: Arc<dyn Account>,
    /// The address one past the current block's end (0 before the first read).
    end: usize,
    /// The current block's size.
    size: u64,
    /// The charge of the current block: alive while a message holds it. Weak, so that a
    /// block whose messages are all gone is no longer charged, even if the connection sits
    /// idle on it.
    charge: Weak<Held>,
}

impl ReadBlocks {
    /// No block seen yet.
    pub(crate) fn new(account: Arc<dyn Account>) -> Self {
        Self {
            account,
            end: 0,
            size: 0,
            charge: Weak::new(),
        }
    }

    /// Notes the block `buf` reads into now. Call after every read, before cutting frames.
    pub(crate) fn observe(&mut self, buf: &BytesMut) {
        let end = buf.as_ptr() as usize + buf.capacity();
        if end != self.end {
            self.end = end;
            self.size = buf.capacity() as u64;
            // The old block's charge stays with the messages that hold it.
            self.charge = Weak::new();
        }
    }

    /// The charge of the current block, for a message whose body is a slice of it: the
    /// existing one, or a new one (charging the block's size) if no message holds it.
    pub(crate) fn charge(&mut self) -> Arc<Held> {
        if let Some(charge) = self.charge.upgrade() {
            return charge;
        }
        let charge = Arc::new(Held::charge(&self.account, self.size));
        self.charge = Arc::downgrade(&charge);
        charge
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::memory::Memory;
    use bytes::BufMut;

    #[test]
    fn a_block_is_charged_once_while_its_slices_live_and_a_new_block_apart() {
        let memory = Arc::new(Memory::unlimited());
        let mut blocks = ReadBlocks::new(memory.clone());
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_slice(&[1u8; 1000]);
        blocks.observe(&buf);
        let first = buf.split_to(10).freeze();
        let a = blocks.charge();
        let second = buf.split_to(10).freeze();
        let b = blocks.charge();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(memory.used(), 64 * 1024);
        // Filling the block past its end moves the buffer to a new block.
        buf.put_slice(&vec![2u8; 128 * 1024]);
        blocks.observe(&buf);
        let third = buf.split_to(10).freeze();
        let c = blocks.charge();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(memory.used() >= 64 * 1024 + 128 * 1024);
        drop((a, b, first, second));
        assert!(memory.used() >= 128 * 1024 && memory.used() < 2 * 128 * 1024 + 64 * 1024);
        drop((c, third));
        assert_eq!(memory.used(), 0);
        // A block no message holds is not charged; the next message charges it again.
        let d = blocks.charge();
        assert!(memory.used() > 0);
        drop(d);
        assert_eq!(memory.used(), 0);
    }
}
