//! Helpers shared by the broker crate's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub(crate) mod http;
pub(crate) mod prometheus;

/// A port free on 127.0.0.1 right now (for a process that takes its port as an argument).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
