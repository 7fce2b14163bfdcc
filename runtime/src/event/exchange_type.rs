//! [`ExchangeType`] and [`DeliveryKind`]: how events are routed and to how many consumers.

/// The AMQP exchange types events use (AMQP 0-9-1 §3.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    /// Every bound queue gets every message; routing keys are ignored.
    Fanout,
    /// A queue gets the messages whose routing key equals one of its binding keys.
    Direct,
    /// Binding keys are patterns over dot-separated words: `*` is one word, `#` zero or more.
    Topic,
}

impl ExchangeType {
    /// lapin's name for it.
    pub(crate) fn lapin(self) -> lapin::ExchangeKind {
        match self {
            ExchangeType::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeType::Direct => lapin::ExchangeKind::Direct,
            ExchangeType::Topic => lapin::ExchangeKind::Topic,
        }
    }
}

/// How many running instances of a service see each event (nameko's handler types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// One durable queue per handler, shared by every instance: each event is handled once,
    /// by whichever instance takes it (competing consumers). Events wait while no instance runs.
    Pool,
    /// An exclusive queue per running instance (deleted with its connection): every instance
    /// handles every event published while it runs.
    Broadcast,
}
