//! Free loopback ports, shared by the broker crate's integration tests and (through a
//! `#[path]` module) the workspace's `tests/common`: one definition for both suites.

/// A port free on 127.0.0.1 right now (bound, then released, for a process that takes its
/// port as an argument or a broker a test starts later).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .expect("the bound socket's address")
        .port()
}
