//! `lepus-broker`: the bundled AMQP 0-9-1 broker (work in progress; see issue 2).
//!
//! # Layout
//! - `server`: the embeddable [`Broker`] builder and the [`BrokerHandle`] it returns.
//! - [`store`]: durable topology and persistent messages (segment log, group commit, recovery).

mod server;
pub mod store;

pub use server::{Broker, BrokerBuilder, BrokerHandle};
