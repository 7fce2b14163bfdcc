//! `connection.blocked` / `connection.unblocked`: a connection's side of the resource alarms
//! (the memory alarm of `memory`, the disk alarm of `disk_alarm`; one set, see `alarms`), as
//! RabbitMQ does it.
//!
//! While an alarm is raised, a connection that has published is *blocked*: its socket is not
//! read (so its publishes wait in the client and the kernel buffers, and TCP back-pressure does
//! the rest), its heartbeat supervision is paused (the client's heartbeats are not read
//! either), and a client that announced the `connection.blocked` capability is told so with
//! reason "low on memory", "low on disk" or both ("low on memory & low on disk"). A connection that never published (a consumer) is not blocked: it
//! keeps acking and draining. When the alarm clears, blocked connections are read again and
//! told `connection.unblocked`. A connection that first publishes while the alarm is raised is
//! blocked right after that publish.
//!
//! Not implemented: per-connection flow control (credit flow) short of the alarms.

use amq_protocol::protocol::{connection, AMQPClass};
use std::sync::Arc;

use tokio::sync::watch;

use crate::alarms::AlarmSet;
use crate::outbox::{Outbound, Outbox};

/// One connection's blocked state. Owned by the connection task.
#[derive(Debug)]
pub(crate) struct Blocking {
    /// The broker's alarm set; the senders are the broker's `Memory` and disk alarm.
    alarm: watch::Receiver<AlarmSet>,
    /// The client announced the `connection.blocked` capability.
    notify: bool,
    /// The connection has published at least once.
    publisher: bool,
    /// Reads are paused (and the client was told, if it asked to be).
    blocked: bool,
}

impl Blocking {
    /// State for a new connection; `notify` is the client's `connection.blocked` capability.
    pub(crate) fn new(alarm: watch::Receiver<AlarmSet>, notify: bool) -> Self {
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
        let alarms = *self.alarm.borrow_and_update();
        let block = self.publisher && alarms.any();
        if block != self.blocked {
            self.blocked = block;
            if self.notify {
                let method = if block {
                    connection::AMQPMethod::Blocked(connection::Blocked {
                        reason: alarms.reason().into(),
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
    pub(crate) fn alarm(&self) -> watch::Receiver<AlarmSet> {
        self.alarm.clone()
    }
}
