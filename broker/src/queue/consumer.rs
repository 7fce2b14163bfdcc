//! A queue's consumers: prefetch credit ([`Consumer`], per consumer and channel-global) and
//! the round robin that picks the next one with credit.
//!
//! With `x-single-active-consumer` there is no round robin: the consumer at the front of the
//! list is the active one and the only one served; the others wait in registration order.
//! When the active one goes (cancel, channel or connection close) its successor moves to the
//! front: the next registered for a quorum queue (rabbit_fifo's waiting list), the first of
//! the highest priority for a classic queue (rabbit_queue_consumers' priority queue). The
//! caller dispatches then ([`Removed::handed_over`]), and the channel's unacked messages come
//! back to the queue when the channel closes, for the new active consumer.

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
    /// Whether a unit of channel-global prefetch credit is free (without taking it).
    fn has_global_credit(&self) -> bool;
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
    /// The round robin found it without credit: it is out of the rotation until it has credit
    /// again, then goes to the back (see [`Queue::next_consumer`]). Written only under its
    /// queue's lock, counted in `QueueState::blocked_consumers`.
    pub(crate) blocked: AtomicBool,
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

    /// Whether [`Consumer::try_reserve`] would succeed now (without taking credit).
    fn has_credit(&self) -> bool {
        self.channel.can_deliver()
            && (self.no_ack
                || ((self.prefetch == 0 || self.in_flight.load(Ordering::Acquire) < self.prefetch)
                    && self.channel.has_global_credit()))
    }

    /// Gives back one unit of credit taken by [`Consumer::try_reserve`].
    pub(crate) fn release(&self) {
        if !self.no_ack {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.channel.release_global(1);
        }
    }
}

/// One consumer as the management API shows it ([`Queue::consumer_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerInfo {
    /// The consumer tag.
    pub(crate) tag: String,
    /// Its channel's number.
    pub(crate) channel: u16,
    /// Its connection's id.
    pub(crate) connection: u64,
    /// Deliveries need no ack.
    pub(crate) no_ack: bool,
    /// Per-consumer prefetch; 0 = unlimited.
    pub(crate) prefetch: u32,
    /// RabbitMQ's `activity_status`: `up` (an ordinary queue's consumer), `single_active`
    /// (the active consumer of a single-active-consumer queue) or `waiting`.
    pub(crate) activity_status: &'static str,
}

/// What [`Queue::remove_consumer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Removed {
    /// The queue should now be auto-deleted (its last consumer went).
    pub(crate) auto_delete: bool,
    /// A single-active-consumer queue's active consumer went and another took over: the
    /// caller dispatches to it (once the channel's unacked messages are back, if it closes).
    pub(crate) handed_over: bool,
}

impl Queue {
    /// The queue's consumers, in registration order (the active one first for a
    /// single-active-consumer queue).
    pub(crate) fn consumer_list(&self) -> Vec<ConsumerInfo> {
        let sac = self.config.single_active_consumer;
        self.lock()
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| ConsumerInfo {
                tag: c.tag.as_str().to_owned(),
                channel: c.channel.channel_id(),
                connection: c.channel.connection_id(),
                no_ack: c.no_ack,
                prefetch: c.prefetch,
                activity_status: match (sac, i) {
                    (false, _) => "up",
                    (true, 0) => "single_active",
                    (true, _) => "waiting",
                },
            })
            .collect()
    }

    /// The active consumer's tag, for a single-active-consumer queue that has one.
    pub(crate) fn single_active_consumer_tag(&self) -> Option<String> {
        if !self.config.single_active_consumer {
            return None;
        }
        self.lock()
            .consumers
            .front()
            .map(|c| c.tag.as_str().to_owned())
    }

    /// Picks the next consumer with credit: the highest priority first, round-robin within it;
    /// for a single-active-consumer queue, the active one (the front) or none.
    ///
    /// The round robin is RabbitMQ's (`rabbit_queue_consumers`): the consumer served goes to
    /// the back; one found without credit (its prefetch, its channel's global prefetch or its
    /// channel's flow) leaves the rotation, and re-enters it at the back once it has credit
    /// again, behind those served meanwhile. (Moving every consumer tried to the back instead
    /// hands a requeued message to a consumer that was blocked a moment ago, ahead of one
    /// that was not: measured against RabbitMQ 3.10 by the differential tester.)
    pub(super) fn next_consumer(&self, st: &mut QueueState) -> Option<Arc<Consumer>> {
        if self.config.single_active_consumer {
            return st.consumers.front().filter(|c| c.try_reserve()).cloned();
        }
        if st.blocked_consumers > 0 {
            Self::unblock(st);
        }
        let top = st.consumers.iter().map(|c| c.priority).max()?;
        let mut lower_levels = false;
        let mut chosen = None;
        for (index, c) in st.consumers.iter().enumerate() {
            if c.priority != top {
                lower_levels = true;
            } else if !c.blocked.load(Ordering::Relaxed) {
                if c.try_reserve() {
                    chosen = Some(index);
                    break;
                }
                c.blocked.store(true, Ordering::Relaxed);
                st.blocked_consumers += 1;
            }
        }
        if chosen.is_none() && lower_levels {
            // Top-priority consumers are all blocked: lower priorities may take it, the
            // highest first, each level in rotation order.
            let mut levels: Vec<i64> = st.consumers.iter().map(|c| c.priority).collect();
            levels.sort_unstable_by_key(|&p| std::cmp::Reverse(p));
            levels.dedup();
            'levels: for level in levels.into_iter().filter(|&p| p != top) {
                for (index, c) in st.consumers.iter().enumerate() {
                    if c.priority != level || c.blocked.load(Ordering::Relaxed) {
                        continue;
                    }
                    if c.try_reserve() {
                        chosen = Some(index);
                        break 'levels;
                    }
                    c.blocked.store(true, Ordering::Relaxed);
                    st.blocked_consumers += 1;
                }
            }
        }
        let served = st.consumers.remove(chosen?)?;
        st.consumers.push_back(served.clone());
        Some(served)
    }

    /// Puts every blocked consumer that has credit again back into the rotation, at the back,
    /// in rotation order. One pass over the consumers (a `VecDeque::remove` per consumer
    /// would make it quadratic in a count the clients choose); allocates only when some
    /// consumer moves.
    fn unblock(st: &mut QueueState) {
        let mut moved = Vec::new();
        st.consumers.retain(|c| {
            let unblocked = c.blocked.load(Ordering::Relaxed) && c.has_credit();
            if unblocked {
                c.blocked.store(false, Ordering::Relaxed);
                moved.push(c.clone());
            }
            !unblocked
        });
        st.blocked_consumers -= moved.len();
        st.consumers.extend(moved);
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
            // RabbitMQ 3.10 refuses an exclusive consumer of a single-active-consumer classic
            // queue, even an empty one, with the exclusive-use text (measured); a quorum
            // queue's consumers are never exclusive (`basic.consume` clears the flag).
            let sac_exclusive = self.config.single_active_consumer && consumer.exclusive;
            if sac_exclusive
                || st.consumers.iter().any(|c| c.exclusive)
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

    /// Removes a consumer; says whether the queue should now be auto-deleted and whether a
    /// single active consumer was handed over (then the caller dispatches).
    pub(crate) fn remove_consumer(&self, tag: &str, channel: &dyn ConsumerChannel) -> Removed {
        let mut st = self.lock();
        let position = st.consumers.iter().position(|c| {
            c.tag.as_str() == tag && std::ptr::addr_eq(Arc::as_ptr(&c.channel), channel)
        });
        let handed_over = position.is_some_and(|i| self.remove_at(&mut st, i));
        st.last_used = Instant::now();
        self.wake.notify_one();
        Removed {
            auto_delete: self.auto_delete
                && st.had_consumer
                && st.consumers.is_empty()
                && !st.deleted,
            handed_over,
        }
    }

    /// Removes the consumer at `index`. For a single-active-consumer queue whose active
    /// consumer that was, moves its successor to the front and returns true.
    pub(super) fn remove_at(&self, st: &mut QueueState, index: usize) -> bool {
        if let Some(c) = st.consumers.remove(index) {
            if c.blocked.load(Ordering::Relaxed) {
                st.blocked_consumers -= 1;
            }
        }
        if !self.config.single_active_consumer || index != 0 || st.consumers.is_empty() {
            return false;
        }
        if self.config.queue_type == QueueType::Classic {
            // The first of the highest priority (`max_by_key` would take the last).
            let top = st.consumers.iter().map(|c| c.priority).max();
            if let Some(next) = st.consumers.iter().position(|c| Some(c.priority) == top) {
                if let Some(c) = st.consumers.remove(next) {
                    st.consumers.push_front(c);
                }
            }
        }
        true
    }
}
