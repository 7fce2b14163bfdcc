//! What leaves a queue by expiry, overflow or rejection ([`DeadLetter`]): returned by the queue
//! operations to the vhost, which republishes it to the dead-letter exchange; the queue forgets
//! it (and its store record) only once its copies are stored where it goes.

use super::*;

/// A dead letter waiting to be republished once the queue lock is released.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    /// The message.
    pub(crate) message: Arc<Message>,
    /// `expired`, `rejected` or `maxlen` (the `reason` in `x-death`).
    pub(crate) reason: &'static str,
    /// The letter's sequence number in its queue and whether it is persistent, while its
    /// queue's store still holds it: forgotten by [`DeadLetter::leave`] once the letter is
    /// stored where it goes. `None` when the queue never held it (`reject-publish-dlx`).
    pub(crate) stored: Option<(u64, bool)>,
}

impl DeadLetter {
    /// The letter has been routed (or dropped): `queue`, where it died, forgets it.
    pub(crate) fn leave(self, queue: &Queue) {
        if let Some((seq, persistent)) = self.stored {
            queue.forget_seq(seq, persistent);
        }
    }

    /// The letter's persistent copies were handed to the store after its refusal count read
    /// `refusals` (see `persistence::Persistence::remove_moved`): `queue` forgets it, its store
    /// keeps it when a write was refused since.
    pub(crate) fn leave_moved(self, queue: &Queue, refusals: u64) {
        if let Some((seq, persistent)) = self.stored {
            queue.forget_moved_seq(seq, persistent, refusals);
        }
    }
}
