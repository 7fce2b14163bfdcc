//! [`CallOptions`]: per-call settings (timeout, priority, queue) for `call_with`.

use std::sync::Arc;
use std::time::Duration;

/// Settings for one call; unset fields take the client's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: Option<u8>,
    pub(crate) queue: Option<Arc<str>>,
}

impl CallOptions {
    setters! {
        /// How long to wait for the reply. The deadline travels with the request (`expiration` and
        /// `x-lepus-deadline`), so a worker that picks it up too late skips it.
        timeout(timeout: Duration) => timeout = Some(timeout);

        /// The AMQP message priority (0-255); only queues declared with `x-max-priority` use it.
        priority(priority: u8) => priority = Some(priority);

        /// Calls the method on `queue` instead of the one its `#[lepus::rpc(queue = ..)]` names
        /// (the client's queue prefix still applies): a queue chosen at run time, from
        /// configuration, served by a worker given `fib::handler().on_queue(..)`.
        queue(queue: impl Into<Arc<str>>) => queue = Some(queue.into());
    }
}
