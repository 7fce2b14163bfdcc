//! The TLS listener (`amqps://`, RabbitMQ's port 5671): rustls terminates TLS, then the
//! decrypted stream is served by the same connection code as plain TCP.
//!
//! Certificates: a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1),
//! loaded once at start. Protocols: TLS 1.2 and 1.3 with rustls' default (aws-lc-rs) cipher
//! suites. Not implemented: client certificates (EXTERNAL), certificate reload.
//!
//! Task ownership: [`start`] spawns the TLS accept task; it owns a `JoinSet` of per-client
//! tasks (TLS handshake, bounded by the broker's handshake timeout, then
//! `connection::serve`) and, on the shutdown signal, stops accepting and drains them as the
//! plain accept loop does. [`crate::BrokerHandle`] owns its `JoinHandle`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::broker_state::BrokerShared;
use crate::config::TlsOptions;
use crate::connection;
use crate::shutdown::{accept_connections, Shutdown};

/// Reads the chain and key and builds the rustls server configuration.
fn server_config(cert: &Path, key: &Path) -> std::io::Result<ServerConfig> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(&format!("certificate file {}", cert.display()), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("certificate file {}", cert.display()), &e))?;
    if chain.is_empty() {
        return Err(invalid(
            &format!("certificate file {}", cert.display()),
            &"no certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(&format!("key file {}", key.display()), &e))?;
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid("certificate and key", &e))
}

/// Binds the TLS listener and spawns its accept task.
pub(crate) async fn start(
    options: &TlsOptions,
    broker: Arc<BrokerShared>,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let config = server_config(&options.cert, &options.key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(&options.listen).await?;
    let local = listener.local_addr()?;
    info!(%local, "TLS listener ready");
    let stop = shutdown.clone();
    let task = tokio::spawn(accept_connections(
        listener,
        shutdown,
        "tls",
        broker.sockets.clone(),
        move |stream, peer, local| {
            let (acceptor, broker, shutdown) = (acceptor.clone(), broker.clone(), stop.clone());
            async move {
                let timeout = broker.config.handshake_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let (read, write) = tokio::io::split(tls);
                        connection::serve(
                            Box::new(read),
                            crate::outbox::WriteSide::Stream(Box::new(write)),
                            peer,
                            local,
                            broker,
                            shutdown,
                        )
                        .await;
                    }
                    Ok(Err(err)) => warn!(%peer, cause = %err, "TLS handshake failed"),
                    Err(_) => warn!(%peer, "TLS handshake timed out"),
                }
            }
        },
    ));
    Ok((local, task))
}
