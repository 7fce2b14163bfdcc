//! `SideConsumer`: a consumer on a short-lived side channel, for readers of result queues
//! (`TaskHandle::result`, `WorkflowHandle::result`), closed in the one order that is safe with
//! lapin: the channel first, then the consumer.
//!
//! Why the order matters: dropping a lapin `Consumer` whose channel is still open makes lapin
//! send `basic.cancel` from a task of its own (its `ConsumerCanceler`). That task checks that
//! the channel is open, then sends; our `channel.close` can run between the two (lapin takes no
//! lock across them, and its task runs on another worker thread). Then either lapin's second
//! check fails, which lapin reports as a connection error and closes the connection, or the
//! `basic.cancel` goes out after our `channel.close`: the broker has removed the channel by
//! then, and a method on a channel that is not open is a connection error, 504 CHANNEL_ERROR
//! "expected 'channel.open'" (RabbitMQ answers the same). Either way the connection goes down
//! with every result read on it. Closing the channel while we still hold the consumer marks the
//! consumer as cancelling (lapin's `set_closing`), so dropping it afterwards sends nothing.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;

use crate::client::Client;
use crate::task::enqueue::{close_side_channel, side_channel};

/// A side channel and, once [`consume`](SideConsumer::consume) succeeded, one consumer on it.
pub(crate) struct SideConsumer {
    /// Our handle of the side channel; lapin holds the other end. [`close`](SideConsumer::close)
    /// or our `Drop` closes it before `consumer` is dropped.
    channel: lapin::Channel,
    /// The consumer, if any. Dropping it while `channel` is open would race lapin's
    /// `basic.cancel` against the close (see the module doc): it is only dropped after the
    /// channel's close was sent.
    consumer: Option<lapin::Consumer>,
}

impl SideConsumer {
    /// Opens a side channel of `client`.
    pub(crate) async fn open(client: &Client) -> crate::Result<SideConsumer> {
        Ok(SideConsumer {
            channel: side_channel(client).await?,
            consumer: None,
        })
    }

    /// Opens a side channel of `client`, runs `read` on it, then closes it (every delivery read
    /// goes back to its queue), all by `timeout`: `None` when it passed first. Opening the
    /// channel, reading and waiting for the close-ok all count against it; a channel that could
    /// not be opened is `read`'s error.
    pub(crate) async fn read_within<T, E: From<crate::Error>>(
        client: &Client,
        timeout: Duration,
        read: impl AsyncFnOnce(&mut SideConsumer) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let opened = tokio::time::timeout_at(deadline, SideConsumer::open(client))
            .await
            .ok()?;
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(err) => return Some(Err(err.into())),
        };
        let waited = tokio::time::timeout_at(deadline, read(&mut reader)).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        reader.close(left).await;
        waited.ok()
    }

    /// Starts consuming `queue` (acknowledgements required: the deliveries stay unacked and go
    /// back to the queue when the channel closes).
    pub(crate) async fn consume(&mut self, queue: &str) -> lapin::Result<()> {
        let consumer = self
            .channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.consumer = Some(consumer);
        Ok(())
    }

    /// The next delivery; `None` when the consumer ended (cancelled by the broker, the channel
    /// closed) or [`consume`](SideConsumer::consume) was not called.
    pub(crate) async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        self.consumer.as_mut()?.next().await
    }

    /// Closes the channel (every delivery read goes back to its queue), then drops the
    /// consumer. Waits for the broker's close-ok at most `grace`: the close is sent on the
    /// first poll whatever happens next, so giving up early only stops waiting for the reply.
    pub(crate) async fn close(mut self, grace: Duration) {
        let channel = self.channel.clone();
        let _ = tokio::time::timeout(grace, close_side_channel(channel)).await;
        // Dropped after the close was sent: lapin marked it as cancelling.
        drop(self.consumer.take());
    }
}

impl Drop for SideConsumer {
    /// A reader dropped mid-wait (its future cancelled): close the channel, then drop the
    /// consumer, from a task of our own (a consumer dropped first would race the close, see the
    /// module doc).
    ///
    /// The channel is closed even with no consumer stored: a future dropped while its
    /// `basic.consume` was in flight leaves a consumer the broker registered and we never got.
    /// lapin closes a channel when its last handle goes, but that channel was seen to stay open
    /// (most likely a handle held on lapin's side of the in-flight consume), the consumer
    /// holding the result unacked for as long as the connection lived: every later reader
    /// timed out. After [`close`](SideConsumer::close) the channel is no longer open and this
    /// does nothing.
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        let channel = self.channel.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    close_side_channel(channel).await;
                    drop(consumer);
                });
            }
            // No runtime (a reader dropped outside tokio): nothing can be sent in order;
            // lapin's own clean-up runs.
            Err(_) => drop(consumer),
        }
    }
}
