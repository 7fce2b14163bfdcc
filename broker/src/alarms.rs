//! The broker's resource alarms as one set: the memory alarm (see `memory`) and the disk
//! alarm (see `disk_alarm`) each raise and clear their own bit; connections watch the set
//! (see `connection_blocked`) and block their publishers while any bit is raised, as
//! RabbitMQ's `rabbit_alarm` does.
//!
//! Concurrency: one [`Alarms`] per broker, held (`Arc`) by the broker's `Memory` and by the
//! disk alarm's task, which are the only writers; connections hold receivers
//! ([`Alarms::subscribe`]). Dropping the last sender (the broker) ends the receivers' waits.

use tokio::sync::watch;

/// Which resource an alarm is about (RabbitMQ's `{resource_limit, Resource, Node}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// Accounted memory above the high-watermark.
    Memory,
    /// Free space of the data directory's file system below the disk free limit.
    Disk,
}

/// The alarms raised now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AlarmSet {
    /// The memory alarm.
    pub(crate) memory: bool,
    /// The disk alarm.
    pub(crate) disk: bool,
}

impl AlarmSet {
    /// True while any alarm is raised: publishers are blocked.
    pub(crate) fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The reason `connection.blocked` gives, in RabbitMQ's words: "low on memory", "low on
    /// disk", or both joined with " & " (`rabbit_reader:send_blocked`).
    pub(crate) fn reason(self) -> String {
        let reasons: Vec<&str> = [(self.memory, "low on memory"), (self.disk, "low on disk")]
            .into_iter()
            .filter_map(|(raised, reason)| raised.then_some(reason))
            .collect();
        reasons.join(" & ")
    }
}

/// The broker's alarm set; see the module doc.
#[derive(Debug)]
pub(crate) struct Alarms {
    /// The set now; receivers are the connections.
    set: watch::Sender<AlarmSet>,
}

impl Default for Alarms {
    fn default() -> Self {
        Self {
            set: watch::Sender::new(AlarmSet::default()),
        }
    }
}

impl Alarms {
    /// Raises (`raised`) or clears the alarm of `resource`. True when that changed it.
    pub(crate) fn set(&self, resource: Resource, raised: bool) -> bool {
        self.set.send_if_modified(|set| {
            let bit = match resource {
                Resource::Memory => &mut set.memory,
                Resource::Disk => &mut set.disk,
            };
            let changed = *bit != raised;
            *bit = raised;
            changed
        })
    }

    /// The alarms raised now.
    pub(crate) fn current(&self) -> AlarmSet {
        *self.set.borrow()
    }

    /// A receiver of the set, for a connection.
    pub(crate) fn subscribe(&self) -> watch::Receiver<AlarmSet> {
        self.set.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_every_raised_alarm_as_rabbitmq_does() {
        let alarms = Alarms::default();
        let watcher = alarms.subscribe();
        assert!(!alarms.current().any());
        assert!(alarms.set(Resource::Disk, true));
        assert!(!alarms.set(Resource::Disk, true), "no change");
        assert_eq!(watcher.borrow().reason(), "low on disk");
        assert!(alarms.set(Resource::Memory, true));
        assert_eq!(alarms.current().reason(), "low on memory & low on disk");
        assert!(alarms.set(Resource::Disk, false));
        assert_eq!(alarms.current().reason(), "low on memory");
        assert!(alarms.set(Resource::Memory, false));
        assert!(!watcher.borrow().any());
    }
}
