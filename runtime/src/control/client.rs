//! [`Control`]: the operator's side of the control plane: broadcast a command to the workers
//! and gather their answers for a while (workers come and go, so nobody knows how many will
//! answer; as `celery inspect` does, the client waits a fixed time, or until the workers it
//! named have all answered).

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;

use crate::connection::Connection;
use crate::control::message::{self, Command, Reply, Request, Revocation, WorkerInfo};
use crate::control::{listener, revocations, CONTROL_EXCHANGE};
use crate::envelope::CONTENT_TYPE;
use crate::error::{Error, Result};
use crate::task::headers::now_ms;

/// How long [`Control`] gathers answers by default.
pub const DEFAULT_CONTROL_WAIT: Duration = Duration::from_secs(1);

/// Sends control commands to the workers on a broker (see the module `control`).
#[derive(Debug, Clone)]
pub struct Control {
    conn: Connection,
    wait: Duration,
}

impl Control {
    /// A control client on `conn`, gathering answers for [`DEFAULT_CONTROL_WAIT`].
    pub fn new(conn: &Connection) -> Self {
        Control {
            conn: conn.clone(),
            wait: DEFAULT_CONTROL_WAIT,
        }
    }

    /// Gathers answers for `wait` instead (longer on a loaded broker or a slow link).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The ids of the workers that answer a `ping`, sorted.
    pub async fn ping(&self) -> Result<Vec<String>> {
        let mut ids = self
            .gather(Command::Ping, None, |reply| match reply {
                Reply::Pong { worker } => Some(worker),
                _ => None,
            })
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// What every running worker (or those named in `workers`) runs and has run, sorted by
    /// worker id.
    pub async fn inspect(&self, workers: Option<&[String]>) -> Result<Vec<WorkerInfo>> {
        let mut infos = self
            .gather(Command::Inspect, workers, |reply| match reply {
                Reply::Info(info) => Some(info),
                _ => None,
            })
            .await?;
        infos.sort_by(|a, b| a.worker.cmp(&b.worker));
        Ok(infos)
    }

    /// Revokes task `task_id` for `keep`: every worker skips it (acks it unrun, as `revoked`),
    /// including workers started later, until `keep` has passed; a worker running it cancels it
    /// if the task opted in (`cancellable`), which then ends as revoked, not retried. The
    /// revocation is stored durably (confirmed by the broker) before it is broadcast; returns
    /// the answers of the running workers.
    pub async fn revoke(&self, task_id: &str, keep: Duration) -> Result<Vec<Reply>> {
        let keep_ms = crate::envelope::millis(keep).max(1);
        let revocation = Revocation {
            task_id: task_id.to_owned(),
            expires_at_ms: now_ms().saturating_add(keep_ms),
        };
        self.store(&revocation, keep_ms).await?;
        self.broadcast(Command::Revoke(revocation), None).await
    }

    /// Asks the workers named in `workers` (every worker when `None`) to stop consuming and
    /// drain gracefully, as their shutdown signal would; returns the ids that acknowledged.
    pub async fn shutdown(&self, workers: Option<&[String]>) -> Result<Vec<String>> {
        self.gather(Command::Shutdown, workers, |reply| match reply {
            Reply::ShuttingDown { worker } => Some(worker),
            _ => None,
        })
        .await
    }

    /// Publishes the revocation, persistent, to the durable queue and waits for the confirm.
    async fn store(&self, revocation: &Revocation, keep_ms: i64) -> Result<()> {
        let link = self.conn.link_after(0).await?;
        let channel = link.conn.create_channel().await?;
        revocations::declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let body = message::encode(revocation).map_err(|e| Error::Config(e.to_string()))?;
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_expiration(keep_ms.to_string().into());
        let confirm = channel
            .basic_publish(
                "".into(),
                revocations::REVOKED_QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?
            .await?;
        let _ = channel.close(200, "revoked".into()).await;
        if confirm.is_nack() {
            return Err(Error::Config(
                "the broker refused to store the revocation".into(),
            ));
        }
        Ok(())
    }

    /// [`broadcast`](Control::broadcast)s `command` and keeps what `pick` takes from each answer
    /// (the answers of the kind the command asks for).
    async fn gather<T>(
        &self,
        command: Command,
        destination: Option<&[String]>,
        pick: impl FnMut(Reply) -> Option<T>,
    ) -> Result<Vec<T>> {
        let replies = self.broadcast(command, destination).await?;
        Ok(replies.into_iter().filter_map(pick).collect())
    }

    /// Publishes `command` to the control exchange and gathers the answers for the wait (or
    /// until every worker named in `destination` answered).
    async fn broadcast(
        &self,
        command: Command,
        destination: Option<&[String]>,
    ) -> Result<Vec<Reply>> {
        let link = self.conn.link_after(0).await?;
        let channel = link.conn.create_channel().await?;
        listener::declare_exchange(&channel).await?;
        let (queue, mut consumer) = listener::private_queue(&channel).await?;
        let correlation_id = uuid::Uuid::new_v4().simple().to_string();
        let request = Request {
            destination: destination.map(<[String]>::to_vec),
            command,
        };
        let body = message::encode(&request).map_err(|e| Error::Config(e.to_string()))?;
        channel
            .basic_publish(
                CONTROL_EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type(CONTENT_TYPE.into())
                    .with_reply_to(queue.clone())
                    .with_correlation_id(correlation_id.as_str().into()),
            )
            .await?;
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + self.wait;
        while let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, consumer.next()).await {
            let delivery = delivery?;
            if delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_none_or(|id| id.as_str() != correlation_id)
            {
                continue;
            }
            match message::decode::<Reply>(&delivery.data) {
                Ok(reply) => replies.push(reply),
                Err(err) => tracing::debug!(cause = %err, "undecodable control reply ignored"),
            }
            if destination.is_some_and(|named| replies.len() >= named.len()) {
                break;
            }
        }
        let _ = channel.close(200, "control done".into()).await;
        Ok(replies)
    }
}
