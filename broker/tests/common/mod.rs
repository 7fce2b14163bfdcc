//! Helpers shared by the broker crate's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub(crate) mod amqp;
pub(crate) mod http;
pub(crate) mod persistent;
pub(crate) mod ports;
pub(crate) mod prometheus;
