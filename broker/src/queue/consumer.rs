//! A queue's consumers: prefetch credit ([`Consumer`], per consumer and channel-global) and
//! the round robin that picks the next one with credit.

use super::*;

/// The channel a consumer's deliveries go to, as far as a queue knows it: credit, delivery,
/// and cancellation by the broker. `channel::ChannelShared` implements it; queues sit below
/// channels and do not import them (a vtable call per delivery, no allocation or lock).
pub(crate) trait ConsumerChannel: Send + Sync + std::fmt::Debug {
    /// The channel number.
    fn channel_id(&self) -> u16;
    /// The owning connection's id.
    fn connection_id(&self) -> u64;
    /// False while `channel.flow` pauses deliveries.
    fn can_deliver(&self) -> bool;
    /// Takes one unit of channel-global prefetch credit if available.
    fn try_reserve_global(&self) -> bool;
    /// Gives back `n` units of channel-global credit.
    fn release_global(&self, n: u32);
    /// Delivers `qm` from `queue` to `consumer` (called under the queue lock). Gives the
    /// message back if the channel has closed.
    fn deliver(
        &self,
        consumer: &Arc<Consumer>,
        queue: &Arc<Queue>,
        qm: QueuedMessage,
    ) -> Result<(), QueuedMessage>;
    /// The broker cancelled the consumer `consumer_tag` (its queue was deleted): the channel
    /// forgets it and tells a client that asked for `consumer_cancel_notify`.
    fn cancelled_by_broker(&self, consumer_tag: &ShortString);
}

/// A consumer of a queue (`basic.consume`). Held by the queue's consumer list and by its
/// channel's consumer map; dropped from both on cancel, channel close or queue delete.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// The consumer tag, unique within its channel; shared with every delivery queued on
    /// the outbox (`outbox::Outbound::Deliver`), which encodes it without a copy.
    pub(crate) tag: Arc<ShortString>,
    /// The channel deliveries go to.
    pub(crate) channel: Arc<dyn ConsumerChannel>,
    /// Deliveries need no ack (and count against no prefetch).
    pub(crate) no_ack: bool,
    /// Asked for exclusive access to the queue.
    pub(crate) exclusive: bool,
    /// Per-consumer prefetch (`basic.qos` global=false before consume); 0 = unlimited.
    pub(crate) prefetch: u32,
    /// `x-priority`: higher-priority consumers with credit are served first.
    pub(crate) priority: i64,
    /// Deliveries not yet acked. Incremented under the queue lock on delivery, decremented by
    /// the channel on ack/nack/reject/requeue.
    pub(crate) in_flight: AtomicU32,
}

impl Consumer {
    /// Takes one unit of prefetch credit (consumer and channel-global) if available.
    pub(super) fn try_reserve(&self) -> bool {
        if !self.channel.can_deliver() {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if self.prefetch != 0
            && self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.prefetch).then_some(n + 1)
                })
                .is_err()
        {
            return false;
        }
        if self.prefetch == 0 {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        if !self.channel.try_reserve_global() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back one unit of credit taken by [`Consumer::try_reserve`].
    pub(crate) fn release(&self) {
        if !self.no_ack {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.channel.release_global(1);
        }
    }
}

impl Queue {
    /// Consumers as (consumer tag, channel number, connection id, no_ack, prefetch).
    pub(crate) fn consumer_list(&self) -> Vec<(String, u16, u64, bool, u32)> {
        self.lock()
            .consumers
            .iter()
            .map(|c| {
                (
                    c.tag.as_str().to_owned(),
                    c.channel.channel_id(),
                    c.channel.connection_id(),
                    c.no_ack,
                    c.prefetch,
                )
            })
            .collect()
    }

    /// Picks the next consumer with credit: the highest priority first, round-robin within it.
    pub(super) fn next_consumer(st: &mut QueueState) -> Option<Arc<Consumer>> {
        let n = st.consumers.len();
        let top = st.consumers.iter().map(|c| c.priority).max()?;
        let mut fallback_levels = false;
        for _ in 0..n {
            let c = st.consumers.pop_front()?;
            st.consumers.push_back(c.clone());
            if c.priority != top {
                fallback_levels = true;
                continue;
            }
            if c.try_reserve() {
                return Some(c);
            }
        }
        if fallback_levels {
            // Top-priority consumers are all blocked: lower priorities may take it.
            let mut by_priority: Vec<Arc<Consumer>> = st.consumers.iter().cloned().collect();
            by_priority.sort_by_key(|c| std::cmp::Reverse(c.priority));
            for c in by_priority {
                if c.priority != top && c.try_reserve() {
                    if let Some(pos) = st.consumers.iter().position(|x| Arc::ptr_eq(x, &c)) {
                        if let Some(moved) = st.consumers.remove(pos) {
                            st.consumers.push_back(moved);
                        }
                    }
                    return Some(c);
                }
            }
        }
        None
    }

    /// Adds a consumer without dispatching to it yet (the caller sends `consume-ok` first,
    /// then calls [`Queue::dispatch`]). Fails with the 403 text when exclusivity forbids it.
    pub(crate) fn add_consumer(
        &self,
        vhost_name: &str,
        consumer: Arc<Consumer>,
    ) -> Result<(), String> {
        {
            let mut st = self.lock();
            if st.deleted {
                return Err(format!("queue '{}' was deleted", self.name));
            }
            if st.consumers.iter().any(|c| c.exclusive)
                || (consumer.exclusive && !st.consumers.is_empty())
            {
                return Err(format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.name, vhost_name
                ));
            }
            st.consumers.push_back(consumer);
            st.had_consumer = true;
            st.last_used = Instant::now();
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a consumer; true when the queue should now be auto-deleted.
    pub(crate) fn remove_consumer(&self, tag: &str, channel: &dyn ConsumerChannel) -> bool {
        let mut st = self.lock();
        st.consumers.retain(|c| {
            !(c.tag.as_str() == tag && std::ptr::addr_eq(Arc::as_ptr(&c.channel), channel))
        });
        st.last_used = Instant::now();
        self.wake.notify_one();
        self.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted
    }
}
