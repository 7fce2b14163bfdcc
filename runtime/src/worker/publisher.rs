//! [`WorkerPublisher`]: where a worker publishes (RPC replies, task retry copies and dead
//! letters, bounced redeliveries), kept apart from where it consumes and acks.
//!
//! A broker under memory pressure blocks every connection that publishes (`connection.blocked`,
//! RabbitMQ's memory alarm and the bundled broker's `--memory-high-watermark`) and stops reading
//! its socket, acks included. A worker that published its replies on the connection it consumes
//! from would stall its acks too, and a graceful shutdown would wait on them. So by default a
//! worker publishes on a second connection to the same brokers (a sibling of the one it was
//! given, connected on first use and supervised like it): while the alarm lasts its replies and
//! copies wait, but the acks of the consuming connection, which never publishes, keep flowing.
//!
//! Two channels on it, opened on first use and reopened after a channel or connection error:
//! one without confirms for replies (a reply is transient; the caller's timeout covers a lost
//! one) and one in confirm mode for copies, which must be in the broker before the original is
//! acked. While the broker blocks the publishing connection, lapin holds every frame for it,
//! so a request is then acked as soon as its reply is queued in the worker (see `replies`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, OnceCell};
use tokio::time::Instant;
use tracing::warn;

use crate::amqp::confirm_channel;
use crate::connection::Connection;
use crate::error::{Error, Result};

/// How long a publish waits for the publishing connection to come (back) up.
const LINK_WAIT: Duration = Duration::from_secs(10);

/// A worker's publishing side. Shared (`Arc`) by the worker loop, the reply publisher and every
/// handler task; closed by the worker when it stops.
#[derive(Debug)]
pub(crate) struct WorkerPublisher {
    /// The worker's own connection: the one to publish on when not `separate`, else the one
    /// the sibling is made from.
    source: Connection,
    /// Publish on a sibling connection (the default) rather than on `source`.
    separate: bool,
    /// The connection publishes go out on, made on first use.
    conn: OnceCell<Connection>,
    /// The reply channel of the current link generation (no confirms).
    replies: Mutex<Option<Opened>>,
    /// The confirm-mode channel of the current link generation.
    confirmed: Mutex<Option<Opened>>,
}

/// An open channel, the link generation it lives on, and that connection's `frame_max`.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    generation: u64,
    /// The channel (in confirm mode when taken from [`WorkerPublisher::confirmed`]).
    pub(crate) channel: lapin::Channel,
    /// The negotiated `frame_max` of its connection (0: none).
    pub(crate) frame_max: u32,
    /// True while the broker blocks its connection (`connection.blocked`); the sender is the
    /// connection's supervisor.
    pub(crate) blocked: watch::Receiver<bool>,
}

impl WorkerPublisher {
    /// The publisher of a worker on `source`; `separate`: publish on a sibling connection.
    pub(crate) fn new(source: Connection, separate: bool) -> Self {
        WorkerPublisher {
            source,
            separate,
            conn: OnceCell::new(),
            replies: Mutex::new(None),
            confirmed: Mutex::new(None),
        }
    }

    /// The channel for replies (no confirms).
    pub(crate) async fn replies(&self) -> Result<Opened> {
        self.open(&self.replies, false).await
    }

    /// The confirm-mode channel for copies that must reach the broker before an ack.
    pub(crate) async fn confirmed(&self) -> Result<Opened> {
        self.open(&self.confirmed, true).await
    }

    /// A new channel of its own on the publishing connection (a chord's transaction, see
    /// `task::workflow`); the caller closes it (dropping it leaves it open until the link
    /// goes).
    pub(crate) async fn fresh_channel(&self) -> Result<lapin::Channel> {
        let link = self.link().await?;
        Ok(link.conn.create_channel().await?)
    }

    /// The publishing connection's current link, the connection made on first use.
    async fn link(&self) -> Result<crate::connection::Link> {
        let conn = self
            .conn
            .get_or_init(|| async {
                if !self.separate {
                    return self.source.clone();
                }
                match self.source.sibling("publisher").await {
                    Ok(sibling) => sibling,
                    Err(err) => {
                        // A broker limiting connections, say: publishing on the consuming
                        // connection is better than not publishing at all.
                        warn!(cause = %err, "no second connection for publishing; publishing on the consuming one");
                        self.source.clone()
                    }
                }
            })
            .await;
        match tokio::time::timeout(LINK_WAIT, conn.link_after(0)).await {
            Ok(link) => link,
            Err(_) => Err(Error::Timeout(LINK_WAIT)),
        }
    }

    async fn open(&self, slot: &Mutex<Option<Opened>>, confirm: bool) -> Result<Opened> {
        let link = self.link().await?;
        let mut slot = slot.lock().await;
        if let Some(open) = slot.as_ref() {
            if open.generation == link.generation && open.channel.status().connected() {
                return Ok(open.clone());
            }
        }
        let channel = if confirm {
            confirm_channel(&link.conn).await?
        } else {
            link.conn.create_channel().await?
        };
        let open = Opened {
            generation: link.generation,
            channel,
            frame_max: link.conn.configuration().frame_max(),
            blocked: link.blocked.clone(),
        };
        *slot = Some(open.clone());
        Ok(open)
    }

    /// Closes the channels, and the sibling connection, by `deadline` at the latest.
    pub(crate) async fn close(&self, deadline: Instant) {
        for slot in [&self.replies, &self.confirmed] {
            let opened = slot.lock().await.take();
            if let Some(open) = opened {
                if open.channel.status().connected() {
                    let close = open.channel.close(200, "worker stopped".into());
                    let _ = tokio::time::timeout_at(deadline, close).await;
                }
            }
        }
        if self.separate {
            if let Some(conn) = self.conn.get() {
                let _ = tokio::time::timeout_at(deadline, conn.close()).await;
            }
        }
    }
}

/// Shared by the worker's tasks.
pub(crate) type Publisher = Arc<WorkerPublisher>;
