//! [`Publisher`]: the client's channel for task enqueues and event publishes, in confirm mode,
//! and the names it declared recently ([`Declared`]).
//!
//! RPC calls publish on the session channel without confirms (a reply is their
//! acknowledgement); tasks and events need the broker's `basic.ack` before `enqueue` /
//! `publish` return, so they share a second channel in confirm mode, opened on first use and
//! reopened after a reconnection or a channel error. Every concurrent enqueue publishes on it
//! and awaits its own confirm: confirms pipeline, and no channel is opened per call.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::amqp::confirm_channel;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::task::declared::Declared;

/// Per-client publishing state, shared by the client's clones (held in the client's shared
/// state; dropped with the last clone, which closes nothing explicitly: the channel dies with
/// the connection or is reopened).
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// Declarations made through this client.
    declared: Declared,
    /// The confirm-mode channel of the current link generation. The async lock is held only to
    /// clone the channel, or while one caller opens a new one (others wait for it).
    channel: Mutex<Option<PublishChannel>>,
}

/// An open confirm-mode channel and the link it lives on.
#[derive(Debug, Clone)]
pub(crate) struct PublishChannel {
    /// The link generation the channel was opened on.
    generation: u64,
    /// The channel, in confirm mode.
    pub(crate) channel: lapin::Channel,
    /// Its connection (to tell a lost connection from a channel error).
    pub(crate) conn: Arc<lapin::Connection>,
}

impl PublishChannel {
    /// `ConnectionLost` when the channel or connection is gone, else the transport error.
    pub(crate) fn error(&self, err: lapin::Error) -> Error {
        if self.conn.status().connected() && self.channel.status().connected() {
            Error::Transport(err)
        } else {
            Error::ConnectionLost
        }
    }
}

impl Publisher {
    /// The names declared through this client.
    pub(crate) fn declared(&self) -> &Declared {
        &self.declared
    }

    /// The confirm-mode channel, opened if there is none for the current link.
    pub(crate) async fn channel(&self, client: &Client) -> Result<PublishChannel> {
        let session = client.session().await?;
        let mut slot = self.channel.lock().await;
        if let Some(open) = slot.as_ref() {
            if open.generation == session.generation && open.channel.status().connected() {
                return Ok(open.clone());
            }
        }
        let channel = confirm_channel(&session.conn).await?;
        let open = PublishChannel {
            generation: session.generation,
            channel,
            conn: session.conn.clone(),
        };
        *slot = Some(open.clone());
        Ok(open)
    }
}
