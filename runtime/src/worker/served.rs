//! [`Served`]: what the worker running the current handler serves, so that a call from inside
//! a handler to a method of its own worker runs in place instead of deadlocking.
//!
//! A handler that calls a method its own worker serves would otherwise wait for a request that
//! only its own worker can take: with every concurrency slot (or the whole prefetch) held by
//! callers waiting for their nested calls, nobody is left to run them, and the calls hang until
//! their timeouts. So the worker scopes each handler with the queues it serves (a task-local);
//! a call made from that task to one of those queues, on the same broker, runs the handler
//! right there, in the caller's slot: arguments and result still go through MessagePack and
//! errors come back as they would over the broker, but the request never leaves the process.
//! A call made from a task the handler spawned is not in the scope and goes through the broker
//! as usual.

use std::collections::HashMap;
use std::sync::Arc;

use crate::connection::Connection;
use crate::worker::delivery::Routes;
use crate::worker::handler::Handler;

/// The queues a worker serves (with its prefix) and the broker it serves them on.
#[derive(Debug)]
pub(crate) struct Served {
    /// The worker's connection (its broker URLs tell the same broker from another).
    conn: Connection,
    /// Queue name -> the handlers on it.
    queues: HashMap<String, Arc<Routes>>,
}

tokio::task_local! {
    /// Scoped by the worker around each handler it runs.
    pub(crate) static SERVED: Arc<Served>;
}

impl Served {
    pub(crate) fn new<'a>(
        conn: Connection,
        queues: impl IntoIterator<Item = (&'a String, &'a Arc<Routes>)>,
    ) -> Self {
        Served {
            conn,
            queues: queues
                .into_iter()
                .map(|(name, routes)| (name.clone(), routes.clone()))
                .collect(),
        }
    }
}

/// What the worker running the current handler has for a call to `method` on `queue`.
pub(crate) enum Here {
    /// Not a queue of this worker (or not on this broker, or not called from a handler): the
    /// call goes through the broker.
    Elsewhere,
    /// This worker serves the method: run it in place.
    Run(Handler),
    /// This worker consumes the queue but has no RPC handler for the method: the answer it
    /// would give through the broker (after the caller freed a slot, so maybe never) is
    /// "unknown method"; give it at once.
    UnknownMethod,
}

/// Where a call to `method` on `queue` over the broker of `conn` goes, when made from a
/// handler of a worker (see the module documentation).
pub(crate) fn here(conn: &Connection, queue: &str, method: &str) -> Here {
    SERVED
        .try_with(|served| {
            if !served.conn.same_broker(conn) {
                return Here::Elsewhere;
            }
            let Some(routes) = served.queues.get(queue) else {
                return Here::Elsewhere;
            };
            match routes.route(Some(method.as_bytes())) {
                Some(handler) if handler.settle().is_none() => Here::Run(handler.clone()),
                _ => Here::UnknownMethod,
            }
        })
        .unwrap_or(Here::Elsewhere)
}
