//! Entry points for the coverage-guided fuzz targets in `broker/fuzz/` (only with the
//! `fuzzing` feature; not part of the supported API). See `broker/FUZZ.md`.
//!
//! - [`frames`]: the frame decoder over arbitrary bytes, as the read loop calls it.
//! - [`connection`]: arbitrary client bytes through a real connection task (handshake,
//!   channels, methods, content assembly, closing) over an in-memory duplex stream, against
//!   one in-memory broker per fuzzing thread.
//! - [`grammar_frames`] and [`grammar_connection`]: structure-aware — the bytes are choices
//!   for a grammar of client traffic (`grammar`: every method with boundary values, field
//!   tables and arrays of every type, any size and any depth, valid prefixes followed by one
//!   wrong frame), whose frames then go to the two entry points above.
//! - [`TopicBindings`]: the bindings of one topic exchange and its matcher, for the routing
//!   microbenchmark (`broker/benches/topic_route.rs`, issue 13).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::access::{AccessControl, AccessOptions};
use crate::broker_state::BrokerShared;
use crate::config::Config;
use crate::persistence::MemoryStore;
use crate::shutdown::Shutdown;
use crate::vhost::VHosts;

mod grammar;

/// The bindings of one topic exchange (each pattern bound to its own queue) and its matcher,
/// the trie automaton of `exchange::topic`, as `basic.publish` routes through it.
#[derive(Debug)]
pub struct TopicBindings {
    bindings: crate::exchange::Bindings,
}

impl TopicBindings {
    /// One binding per pattern, to queue `q<index>`.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut bindings = crate::exchange::Bindings::new(crate::exchange::ExchangeKind::Topic);
        for (i, pattern) in patterns.into_iter().enumerate() {
            bindings.push(crate::exchange::Binding {
                destination: crate::exchange::Destination::Queue(format!("q{i}")),
                routing_key: pattern.to_owned(),
                arguments: amq_protocol::types::FieldTable::default(),
            });
        }
        Self { bindings }
    }

    /// Routes `key` with no work limit: the number of bindings it matches, and the work the
    /// automaton counted (trie states visited plus one per key word).
    pub fn route(&self, key: &str) -> (usize, usize) {
        let mut matched = 0;
        let work = self
            .bindings
            .route(key, None, usize::MAX, |_| matched += 1)
            .unwrap_or(usize::MAX);
        (matched, work)
    }
}

/// Decodes frames from `data` until it is used up or a frame error, with frame_max 4096 and
/// with the spec's default 131072.
pub fn frames(data: &[u8]) {
    for frame_max in [4096, 131_072] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = crate::frame::decode(&mut buf, frame_max) {}
    }
}

/// Structure-aware [`frames`]: `data` are the grammar's choices (see the module docs).
pub fn grammar_frames(data: &[u8]) {
    frames(&grammar::frames_input(data));
}

/// Structure-aware [`connection`]: `data` are the grammar's choices for a whole client
/// connection (handshake, session, maybe one wrong frame at the end).
pub fn grammar_connection(data: &[u8]) {
    connection(&grammar::connection_input(data));
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    broker: Arc<BrokerShared>,
    /// Keeps the shutdown signal open (dropping it would stop every connection at once).
    _stop: watch::Sender<bool>,
    shutdown: Shutdown,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn harness() -> Harness {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        // Building a current-thread runtime fails only when the OS refuses a timer or I/O
        // driver, which leaves nothing to fuzz.
        .unwrap_or_else(|e| panic!("cannot build the fuzzing runtime: {e}"));
    let config = Config {
        handshake_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let access = AccessControl::load(None, AccessOptions::default())
        .unwrap_or_else(|e| panic!("in-memory access control cannot fail: {e}"));
    let vhosts = VHosts::new(
        Arc::new(MemoryStore),
        Arc::new(crate::memory::Memory::unlimited()),
    );
    // The default configuration has busy polling off.
    let broker = Arc::new(BrokerShared::new(config, vhosts, access));
    let (stop, shutdown) = Shutdown::new();
    Harness {
        runtime,
        broker,
        _stop: stop,
        shutdown,
    }
}

/// Runs one connection task over `data` as the client's bytes, then end of input (which
/// ends every wait in the connection task at once, so no timer runs out).
pub fn connection(data: &[u8]) {
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = cell.get_or_insert_with(harness);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        let peer: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 40000));
        let broker = h.broker.clone();
        let shutdown = h.shutdown.clone();
        let input = data.to_vec();
        h.runtime.block_on(async move {
            let (mut client_read, mut client_write) = tokio::io::split(client);
            // Drain what the broker sends so its writer never blocks on a full pipe.
            let drain = tokio::spawn(async move {
                let mut sink = vec![0u8; 16 * 1024];
                while let Ok(n) = client_read.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
            let feed = tokio::spawn(async move {
                let _ = client_write.write_all(&input).await;
                let _ = client_write.shutdown().await;
                // Keep the write half alive until the server is done reading.
                client_write
            });
            crate::connection::serve(
                Box::new(server_read),
                crate::outbox::WriteSide::Stream(Box::new(server_write)),
                peer,
                None,
                broker,
                shutdown,
            )
            .await;
            drop(feed.await);
            let _ = drain.await;
        });
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The committed inputs of each target: the seeds (`corpus/<target>/seed-*`) and the
    /// inputs that once crashed the broker (`regressions/<target>/*`).
    fn committed(target: &str) -> Vec<Vec<u8>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for dir in [
            root.join("corpus").join(target),
            root.join("regressions").join(target),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if dir.ends_with(target)
                    && dir.parent().is_some_and(|p| p.ends_with("corpus"))
                    && !name.starts_with("seed-")
                {
                    continue;
                }
                if let Ok(data) = std::fs::read(&path) {
                    out.push(data);
                }
            }
        }
        out
    }

    /// The committed seeds run through both entry points and finish (a hang here would be a
    /// libFuzzer timeout there).
    #[test]
    fn seeds_run_to_completion() {
        let mut ran = 0;
        for target in ["connection", "frames"] {
            for data in committed(target) {
                super::frames(&data);
                super::connection(&data);
                ran += 1;
            }
        }
        assert!(ran >= 6, "the seeds exist ({ran} found)");
    }

    /// The structure-aware targets' seeds and regression inputs (the nested-table stack
    /// overflow among them) run to completion.
    #[test]
    fn grammar_seeds_and_regressions_run_to_completion() {
        let mut ran = 0;
        for data in committed("grammar_frames") {
            super::grammar_frames(&data);
            ran += 1;
        }
        for data in committed("grammar_connection") {
            super::grammar_connection(&data);
            ran += 1;
        }
        assert!(ran >= 4, "the grammar seeds exist ({ran} found)");
    }

    /// A short fuzzing run without libFuzzer (stable toolchain, no sanitizer): fixed
    /// pseudo-random inputs through both structure-aware targets.
    #[test]
    fn grammar_targets_survive_a_short_random_run() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: deterministic, good enough to spread choices.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        for i in 0..2000 {
            let len = 16 + (next() % 512) as usize;
            let data: Vec<u8> = (0..len).map(|_| (next() >> 56) as u8).collect();
            super::grammar_frames(&data);
            if i % 2 == 0 {
                super::grammar_connection(&data);
            }
        }
    }
}
