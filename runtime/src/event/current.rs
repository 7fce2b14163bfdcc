//! [`EventInfo`]: the event a handler is running for (its routing key, for instance), now read
//! from its [`Context`] (`ctx.routing_key()`); kept for the code written before the context,
//! and as the fake delivery state of [`run_local`](crate::event::run_local).

use crate::context::{Context, ContextKind};

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

impl EventInfo {
    /// The event part of an event's context.
    pub(crate) fn of(cx: &Context) -> EventInfo {
        EventInfo {
            exchange: cx.exchange().unwrap_or_default().to_owned(),
            routing_key: cx.routing_key().unwrap_or_default().to_owned(),
            message_id: cx.message_id().map(str::to_owned),
            redelivered: cx.redelivered(),
        }
    }
}

/// A fake event context for a local run.
impl From<EventInfo> for Context {
    fn from(info: EventInfo) -> Context {
        let cx = Context::new()
            .with_event(&info.exchange, &info.routing_key)
            .with_redelivered(info.redelivered);
        let cx = match info.message_id {
            Some(id) => cx.with_message_id(id),
            None => cx,
        };
        cx.into_run_of(ContextKind::Event, "", "")
    }
}

/// The event being handled, when called from inside a `#[lepus::event]` function run by a
/// worker (`None` elsewhere).
#[deprecated(
    since = "0.1.0",
    note = "use the event's `lepus::Context` (a `ctx: Context` parameter, or \
            `Context::current()`): `ctx.routing_key()`, `ctx.exchange()`, `ctx.message_id()`"
)]
pub fn current() -> Option<EventInfo> {
    Context::current()
        .filter(|cx| cx.kind() == ContextKind::Event)
        .map(|cx| EventInfo::of(&cx))
}
