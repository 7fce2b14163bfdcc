//! [`current`]: the event a handler is running for (its routing key, for instance).

/// The event being handled by the current tokio task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInfo {
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its `message_id`.
    pub message_id: Option<String>,
    /// True when the broker delivered it before.
    pub redelivered: bool,
}

tokio::task_local! {
    /// Scoped by the event handler around each run.
    pub(crate) static CURRENT: EventInfo;
}

/// The event being handled, when called from inside a `#[lepus::event]` function run by a
/// worker (`None` elsewhere).
pub fn current() -> Option<EventInfo> {
    CURRENT.try_with(Clone::clone).ok()
}
