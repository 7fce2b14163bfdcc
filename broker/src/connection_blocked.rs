//! `connection.blocked` / `connection.unblocked`: a connection's side of the memory alarm
//! (see `memory`), as RabbitMQ does it.
//!
//! While the alarm is raised, a connection that has published is *blocked*: its socket is not
//! read (so its publishes wait in the client and the kernel buffers, and TCP back-pressure does
//! the rest), its heartbeat supervision is paused (the client's heartbeats are not read
//! either), and a client that announced the `connection.blocked` capability is told so with
//! reason "low on memory". A connection that never published (a consumer) is not blocked: it
//! keeps acking and draining. When the alarm clears, blocked connections are read again and
//! told `connection.unblocked`. A connection that first publishes while the alarm is raised is
//! blocked right after that publish.
//!
//! Not implemented: RabbitMQ's disk alarm (`disk_free_limit`), and per-connection flow
//! control (credit flow) short of the memory alarm.

use amq_protocol::protocol::{connection, AMQPClass};
use std::sync::Arc;

use tokio::sync::watch;

use crate::outbox::{Outbound, Outbox};

/// The reason RabbitMQ gives in `connection.blocked` for the memory alarm.
pub(crate) const LOW_ON_MEMORY: &str = "low on memory";

/// One connection's blocked state. Owned by the connection task.
#[derive(Debug)]
pub(crate) struct Blocking {
    /// The broker's memory alarm (true while raised); the sender is the broker's `Memory`.
    alarm: watch::Receiver<bool>,
    /// The client announced the `connection.blocked` capability.
    notify: bool,
    /// The connection has published at least once.
    publisher: bool,
    /// Reads are paused (and the client was told, if it asked to be).
    blocked: bool,
}

impl Blocking {
    /// State for a new connection; `notify` is the client's `connection.blocked` capability.
    pub(crate) fn new(alarm: watch::Receiver<bool>, notify: bool) -> Self {
        Self {
            alarm,
            notify,
            publisher: false,
            blocked: false,
        }
    }

    /// The connection published (`basic.publish`).
    pub(crate) fn published(&mut self) {
        self.publisher = true;
    }

    /// Brings the blocked state in line with the alarm, telling the client on a change.
    /// Returns true while the socket must not be read.
    pub(crate) fn update(&mut self, writer: &Arc<Outbox>) -> bool {
        let block = self.publisher && *self.alarm.borrow_and_update();
        if block != self.blocked {
            self.blocked = block;
            if self.notify {
                let method = if block {
                    connection::AMQPMethod::Blocked(connection::Blocked {
                        reason: LOW_ON_MEMORY.into(),
                    })
                } else {
                    connection::AMQPMethod::Unblocked(connection::Unblocked {})
                };
                let _ = writer.send(Outbound::Method(0, AMQPClass::Connection(method)));
            }
        }
        self.blocked
    }

    /// A receiver that resolves `changed()` when the alarm flips (a clone, so that waiting on
    /// it does not borrow the connection).
    pub(crate) fn alarm(&self) -> watch::Receiver<bool> {
        self.alarm.clone()
    }
}
