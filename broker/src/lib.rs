//! `lepus-broker`: the bundled AMQP 0-9-1 broker (work in progress; see issue 2).
//!
//! # Layout
//! - `server`: the embeddable [`Broker`] builder and the [`BrokerHandle`] it returns.

mod server;

pub use server::{Broker, BrokerBuilder, BrokerHandle};
