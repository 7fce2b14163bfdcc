//! The worker's reply publisher: one task per consuming channel that publishes the replies of
//! finished requests (`basic.publish` to their `reply-to`, on the worker's publishing
//! connection, see `publisher`) and then acks the requests (`basic.ack`, on the channel they
//! came from).
//!
//! Handler tasks hand their outcome over as a [`Settled`] through an unbounded channel (bounded
//! in practice by the prefetch count: the broker delivers no more than that many unacked
//! requests). Each reply is published, and its request is acked only once lapin wrote the
//! reply: a crash in between would otherwise lose a request whose reply never left
//! (at-least-once). A request whose reply could not be published is handed back to the broker
//! (`basic.nack`, requeue) and runs again; its delivery count (`redelivery`) bounds how often.
//!
//! One exception: while the broker blocks the publishing connection (`connection.blocked`, its
//! memory alarm), lapin writes nothing on it, and waiting for the reply to be written would
//! stall the acks, and with them the consumers' prefetch, for as long as the alarm lasts. A
//! request is then acked once its reply is queued in lapin; the reply leaves when the broker
//! unblocks the connection. A worker that dies in between loses such a reply (its caller times
//! out, as it would had the worker died before replying), not the request's ack.
//!
//! When every delivery on the channel comes through here (the worker serves RPC handlers only;
//! task and event handlers settle their own deliveries), requests are acked with
//! `multiple = true`: the [`AckWindow`] tracks which delivery tags are settled, and one frame
//! acks the contiguous run that the replies just written complete. A request that finishes out
//! of order is acked alone at once, so a slow handler never holds back the prefetch credit of
//! the others. The frames and their order per request are unchanged: reply, then the ack that
//! covers it.
//!
//! Why a task rather than each handler publishing its own reply (profiled with `lepus-bench rpc
//! --callers 8 --in-flight 32`): the lapin futures of a publish (1 KiB) and an ack made each
//! handler task 3.5 KiB, above glibc's 1 KiB thread cache; one ack frame per run of requests
//! instead of one per request saves lapin, the socket and the broker the rest.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::BasicProperties;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::envelope::CONTENT_TYPE;
use crate::worker::publisher::Publisher;

/// How long a request whose reply could not be published waits before it is handed back.
pub(crate) const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// How many out-of-order acks the [`AckWindow`] remembers before it stops acking with
/// `multiple` on this channel (a delivery that is never settled, e.g. a handler task that
/// panicked outside the handler, would otherwise make the set grow for the channel's life).
const MAX_AHEAD: usize = 4096;

/// A request whose handler finished: what to publish, and which delivery to ack after it.
#[derive(Debug)]
pub(crate) struct Settled {
    /// The request's `delivery-tag` on the worker's channel.
    pub(crate) delivery_tag: u64,
    /// The reply to publish first; `None` to ack only (no `reply-to`, or past its deadline).
    pub(crate) reply: Option<Reply>,
}

/// A reply: published to the default exchange with routing key `reply_to`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) reply_to: ShortString,
    pub(crate) correlation_id: Option<ShortString>,
    pub(crate) body: Vec<u8>,
}

/// Publishes replies through `publisher` and acks requests on `channel` (the consuming channel
/// they came from) until every sender of `settled` is gone (the worker's loop holds one per
/// channel, each handler task a clone) and everything it was handed is settled. `multiple`:
/// every delivery on `channel` is settled through here, so acks may use `multiple = true`.
/// Spawned by the worker for each consuming channel it opens.
pub(crate) async fn run(
    channel: Arc<lapin::Channel>,
    publisher: Publisher,
    mut settled: mpsc::UnboundedReceiver<Settled>,
    multiple: bool,
) {
    // Replies being written; each yields its request's tag once written, whether the reply
    // went out, and the reply channel it opened if it had to open one.
    let mut publishing = FuturesUnordered::new();
    // Acks and nacks being written.
    let mut acking = FuturesUnordered::new();
    let mut window = AckWindow::new(multiple);
    let mut written: Vec<(u64, bool)> = Vec::new();
    // The reply channel and its connection, shared by the replies being written (an `Arc`
    // clone per reply, where cloning a `lapin::Channel` copies a dozen `Arc`s).
    let mut replies: Option<ReplyChannel> = None;
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = publishing.next(), if !publishing.is_empty() => {
                // Take every other reply already written too: one ack frame may cover them all.
                let mut take = |(tag, sent, opened): Published| {
                    written.push((tag, sent));
                    if opened.is_some() {
                        replies = opened;
                    }
                };
                take(done);
                while let Some(Some(done)) = publishing.next().now_or_never() {
                    take(done);
                }
                window.settle(&mut written, |tag, multiple, requeue| {
                    acking.push(settle(&channel, tag, multiple, requeue));
                });
            }
            Some(()) = acking.next(), if !acking.is_empty() => {}
            item = settled.recv(), if open => match item {
                Some(item) => {
                    let current = replies.clone().filter(|c| c.channel.status().connected());
                    publishing.push(publish(publisher.clone(), current, item));
                }
                None => open = false,
            },
            else => break,
        }
    }
}

/// The reply channel, and whether the broker blocks its connection.
#[derive(Clone)]
struct ReplyChannel {
    channel: Arc<lapin::Channel>,
    blocked: tokio::sync::watch::Receiver<bool>,
}

/// A written reply: the request's tag, whether the reply went out (else the request is handed
/// back), and the reply channel if this publish had to open one.
type Published = (u64, bool, Option<ReplyChannel>);

/// Publishes the reply of `item`, if it has one, on `channel` (opened from `publisher` when
/// `None`).
async fn publish(publisher: Publisher, channel: Option<ReplyChannel>, item: Settled) -> Published {
    let Settled {
        delivery_tag,
        reply,
    } = item;
    let Some(reply) = reply else {
        return (delivery_tag, true, None);
    };
    let (reply_channel, opened) = match channel {
        Some(channel) => (channel, None),
        None => match publisher.replies().await {
            Ok(open) => {
                let channel = ReplyChannel {
                    channel: Arc::new(open.channel),
                    blocked: open.blocked,
                };
                (channel.clone(), Some(channel))
            }
            Err(err) => {
                warn!(delivery_tag, cause = %err, "no reply channel; request handed back to the broker");
                return (delivery_tag, false, None);
            }
        },
    };
    let mut properties = BasicProperties::default().with_content_type(CONTENT_TYPE.into());
    if let Some(id) = reply.correlation_id {
        properties = properties.with_correlation_id(id);
    }
    let ReplyChannel {
        channel,
        mut blocked,
    } = reply_channel;
    let publishing = channel.basic_publish(
        "".into(),
        reply.reply_to,
        BasicPublishOptions::default(),
        &reply.body,
        properties,
    );
    // lapin queues the frames at the first poll and resolves once it wrote them. While the
    // broker blocks the connection it writes nothing: the request is acked without waiting,
    // and dropping the future leaves the queued frames to go out once unblocked.
    let published = tokio::select! {
        biased;
        published = publishing => published,
        Ok(_) = blocked.wait_for(|blocked| *blocked) => {
            debug!(delivery_tag, "reply held by a blocked connection; request acked");
            return (delivery_tag, true, opened);
        }
    };
    // `basic_publish` resolves once lapin's I/O loop wrote the frames. The reply channel is not
    // in confirm mode, so the `PublisherConfirm` is already resolved (`NotRequested`) and is
    // dropped: lapin discards it, whereas awaiting it arms an event listener (two allocations).
    match published {
        Ok(_not_requested) => (delivery_tag, true, opened),
        Err(err) => {
            warn!(delivery_tag, cause = %err, "reply publish failed; request handed back to the broker");
            (delivery_tag, false, opened)
        }
    }
}

/// Sends `basic.ack` (or `basic.nack` with requeue) straight on the channel the requests came
/// from (delivery tags are per channel), not through lapin's `Acker`, which routes each ack
/// through lapin's internal RPC task and spawns a task for it (perf: 3.2 us of CPU per call).
async fn settle(channel: &lapin::Channel, delivery_tag: u64, multiple: bool, requeue: bool) {
    let sent = if requeue {
        // Not at once: a broker that refuses every reply would otherwise have the request run
        // again in a tight loop (its delivery count ends the loop, see `redelivery`).
        tokio::time::sleep(RETRY_PAUSE).await;
        channel
            .basic_nack(
                delivery_tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await
    } else {
        channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple })
            .await
    };
    if let Err(err) = sent {
        warn!(delivery_tag, multiple, requeue, cause = %err, "settling a request failed; it will be redelivered");
    }
}

/// Which `basic.ack` frames settle the requests whose replies were written, on one channel.
///
/// Invariant: every delivery tag up to `acked_upto` is settled and acked (alone, or by a
/// `multiple` ack), and `ahead` holds the tags above it that were acked alone. A `multiple` ack
/// is sent only for a tag settled in the same round (never acked before: RabbitMQ closes the
/// channel on an unknown tag) and only when every tag below it is settled.
#[derive(Debug)]
struct AckWindow {
    /// Acks may use `multiple = true` (every delivery on the channel is settled here).
    multiple: bool,
    acked_upto: u64,
    ahead: BTreeSet<u64>,
}

impl AckWindow {
    fn new(multiple: bool) -> Self {
        AckWindow {
            multiple,
            acked_upto: 0,
            ahead: BTreeSet::new(),
        }
    }

    /// Hands `ack(tag, multiple, requeue)` the frames that settle `tags` (drained; each with
    /// `true` when its reply went out, else it is handed back with `basic.nack`), fewest frames
    /// first. A nack names its own tag only; a `multiple` ack never names a nacked tag.
    fn settle(&mut self, tags: &mut Vec<(u64, bool)>, mut ack: impl FnMut(u64, bool, bool)) {
        if !self.multiple {
            tags.drain(..)
                .for_each(|(tag, sent)| ack(tag, false, !sent));
            return;
        }
        tags.sort_unstable();
        let mut run_end = None;
        for (tag, sent) in tags.drain(..) {
            if tag <= self.acked_upto {
                // Settled twice: cannot happen (one outcome per delivery); never ack twice.
                debug!(delivery_tag = tag, "delivery settled twice; ignored");
            } else if !sent {
                // Nacked alone at once; then it counts as settled, like an ack sent alone.
                ack(tag, false, true);
                if tag == self.acked_upto + 1 {
                    // The run so far must be acked now: a later `multiple` ack may not name
                    // this tag, and one naming a later tag would not cover the run's end.
                    if let Some(end) = run_end.take() {
                        ack(end, true, false);
                    }
                    self.acked_upto = tag;
                    while self.ahead.remove(&(self.acked_upto + 1)) {
                        self.acked_upto += 1;
                    }
                } else {
                    self.ahead.insert(tag);
                }
            } else if tag == self.acked_upto + 1 {
                self.acked_upto = tag;
                run_end = Some(tag);
                while self.ahead.remove(&(self.acked_upto + 1)) {
                    self.acked_upto += 1;
                }
            } else {
                // A gap below it that no later (larger) tag of this round can fill: ack alone.
                ack(tag, false, false);
                self.ahead.insert(tag);
            }
        }
        if let Some(tag) = run_end {
            // Every tag up to `tag` is settled; those of earlier rounds were acked already.
            ack(tag, true, false);
        }
        if self.ahead.len() > MAX_AHEAD {
            debug!(
                acked_upto = self.acked_upto,
                "a delivery stays unsettled; acking one by one on this channel"
            );
            self.multiple = false;
            self.ahead.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The acks `window` sends for `tags` (all replies sent).
    fn acks(window: &mut AckWindow, tags: &[u64]) -> Vec<(u64, bool)> {
        let mut sent = Vec::new();
        let mut tags: Vec<(u64, bool)> = tags.iter().map(|&t| (t, true)).collect();
        window.settle(&mut tags, |tag, multiple, requeue| {
            assert!(!requeue);
            sent.push((tag, multiple))
        });
        sent
    }

    /// The frames `window` sends for `tags`: (tag, multiple, nack).
    fn frames(window: &mut AckWindow, tags: &[(u64, bool)]) -> Vec<(u64, bool, bool)> {
        let mut sent = Vec::new();
        window.settle(&mut tags.to_vec(), |tag, multiple, requeue| {
            sent.push((tag, multiple, requeue))
        });
        sent
    }

    #[test]
    fn a_nacked_tag_is_never_named_by_a_multiple_ack() {
        let mut window = AckWindow::new(true);
        // 1 and 2 in order, 3 nacked: the run up to 2 is acked before 3 is passed over.
        assert_eq!(
            frames(&mut window, &[(1, true), (2, true), (3, false)]),
            vec![(3, false, true), (2, true, false)]
        );
        assert_eq!(window.acked_upto, 3);
        // 5 nacked out of order, then 4: the run ends at 4, and 5 is already settled.
        assert_eq!(frames(&mut window, &[(5, false)]), vec![(5, false, true)]);
        assert_eq!(frames(&mut window, &[(4, true)]), vec![(4, true, false)]);
        assert_eq!(window.acked_upto, 5);
        assert_eq!(acks(&mut window, &[6]), vec![(6, true)]);
    }

    #[test]
    fn in_order_runs_take_one_multiple_ack() {
        let mut window = AckWindow::new(true);
        assert_eq!(acks(&mut window, &[2, 1, 3]), vec![(3, true)]);
        assert_eq!(acks(&mut window, &[4]), vec![(4, true)]);
    }

    #[test]
    fn out_of_order_tags_are_acked_alone_and_later_runs_skip_over_them() {
        let mut window = AckWindow::new(true);
        // 1 is still running: 2 and 4 are acked alone at once.
        assert_eq!(acks(&mut window, &[4, 2]), vec![(2, false), (4, false)]);
        // 1 completes the run up to 2; 3 then 4 (acked before) follow: the run ends at 4, but
        // 4 was acked already, so the multiple ack names 3, the last tag of this round.
        assert_eq!(acks(&mut window, &[1, 3]), vec![(3, true)]);
        assert_eq!(window.acked_upto, 4);
        assert!(window.ahead.is_empty());
        assert_eq!(acks(&mut window, &[5]), vec![(5, true)]);
    }

    #[test]
    fn without_multiple_every_tag_is_acked_alone() {
        let mut window = AckWindow::new(false);
        assert_eq!(acks(&mut window, &[2, 1]), vec![(2, false), (1, false)]);
    }

    #[test]
    fn a_tag_never_settled_turns_multiple_acks_off() {
        let mut window = AckWindow::new(true);
        let tags: Vec<u64> = (2..=(MAX_AHEAD as u64 + 2)).collect();
        let sent = acks(&mut window, &tags);
        assert!(sent.iter().all(|(_, multiple)| !multiple));
        assert_eq!(sent.len(), tags.len());
        assert!(!window.multiple);
        assert_eq!(acks(&mut window, &[1]), vec![(1, false)]);
    }
}
