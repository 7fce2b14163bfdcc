//! The embeddable broker: a builder, and a handle to a running broker (placeholder API).

use std::net::SocketAddr;

/// Entry point: `Broker::builder().listen("127.0.0.1:0").start().await?`.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with the defaults (`127.0.0.1:5672`).
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            listen: "127.0.0.1:5672".to_owned(),
        }
    }
}

/// Configures a broker before it starts.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    listen: String,
}

impl BrokerBuilder {
    /// The address to accept AMQP connections on (`127.0.0.1:0` picks a free port).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Binds the listener and starts serving in the background.
    pub async fn start(self) -> std::io::Result<BrokerHandle> {
        let listener = tokio::net::TcpListener::bind(&self.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(BrokerHandle { local_addr })
    }
}

/// A running broker. Dropping it does not stop the broker; call [`BrokerHandle::shutdown`].
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
}

impl BrokerHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `amqp://guest:guest@ADDR/%2f`, ready for any AMQP client.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.local_addr)
    }

    /// Stops accepting, closes every connection and waits for the broker's tasks.
    pub async fn shutdown(self) {}
}
