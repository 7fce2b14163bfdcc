//! Entry points for the coverage-guided fuzz targets in `broker/fuzz/` (only with the
//! `fuzzing` feature; not part of the supported API). See `broker/FUZZ.md`.
//!
//! - [`frames`]: the frame decoder over arbitrary bytes, as the read loop calls it.
//! - [`connection`]: arbitrary client bytes through a real connection task (handshake,
//!   channels, methods, content assembly, closing) over an in-memory duplex stream, against
//!   one in-memory broker per fuzzing thread.

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

/// Decodes frames from `data` until it is used up or a frame error, with frame_max 4096 and
/// with the spec's default 131072.
pub fn frames(data: &[u8]) {
    for frame_max in [4096, 131_072] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = crate::frame::decode(&mut buf, frame_max) {}
    }
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
                crate::writer::WriteSide::Stream(Box::new(server_write)),
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
    /// The committed seeds run through both entry points and finish (a hang here would be a
    /// libFuzzer timeout there).
    #[test]
    fn seeds_run_to_completion() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut ran = 0;
        for target in ["connection", "frames"] {
            let Ok(dir) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for entry in dir.flatten() {
                let Ok(data) = std::fs::read(entry.path()) else {
                    continue;
                };
                super::frames(&data);
                super::connection(&data);
                ran += 1;
            }
        }
        assert!(ran >= 6, "the seeds exist ({ran} found)");
    }
}
