//! The `queue` class: declare (server-named, passive, exclusive, arguments), bind, unbind,
//! purge, delete.

use amq_protocol::protocol::{queue, AMQPClass};
use amq_protocol::types::ShortString;
use rand::Rng;

use super::Session;
use super::{default_exchange, locked, no_exchange, no_queue, not_persisted, validate_binding};
use crate::error::AmqpError;
use crate::exchange::{Binding, Destination};
use crate::field_value::string_field;
use crate::persistence::TopologyChange;
use crate::queue::{Queue, QueueConfig, QueueType};
use crate::vhost::REPLY_TO;

/// A server-generated name: `amq.gen-` and 22 URL-safe base64 characters, as RabbitMQ does.
pub(crate) fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let suffix: String = (0..22)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

impl Session {
    /// Looks a queue up for an operation that needs it, with RabbitMQ's 404/405 checks.
    pub(crate) fn usable_queue(&self, name: &str) -> Result<std::sync::Arc<Queue>, AmqpError> {
        let q = self
            .vhost
            .queue(name)
            .ok_or_else(|| no_queue(name, &self.vhost.name))?;
        if q.exclusive_owner.is_some_and(|owner| owner != self.id) {
            return Err(locked(name, &self.vhost.name));
        }
        Ok(q)
    }

    /// `queue.declare`.
    pub(crate) fn queue_declare(&mut self, ch: u16, m: queue::Declare) -> Result<(), AmqpError> {
        let vh = self.vhost.name.clone();
        let mut name = m.queue.as_str().to_owned();
        if name == REPLY_TO || name.starts_with("amq.rabbitmq.reply-to.") {
            // Direct reply-to is a pseudo-queue: it always "exists", is always empty and, as
            // RabbitMQ 3.10 reports it, always has one consumer.
            if let Some(channel) = self.channels.get_mut(&ch) {
                channel.last_queue = Some(name.clone());
            }
            if !m.nowait {
                self.send(ch, declare_ok(&name, 0, 1));
            }
            return Ok(());
        }
        // Exclusive queues are never durable (RabbitMQ ignores `durable` on them too).
        let durable = m.durable && !m.exclusive;
        let mut commit = None;
        let (messages, consumers) = if m.passive {
            let q = self.usable_queue(&name)?;
            q.counts()
        } else {
            if name.is_empty() {
                // RabbitMQ refuses to name a quorum queue or a stream, before anything else.
                // (With an invalid type it fails with an internal error and closes the
                // connection; here the type's 406 below answers instead.)
                if let Ok(t) = QueueType::from_arguments(&m.arguments) {
                    if !t.server_named_allowed() {
                        return Err(AmqpError::precondition_failed(format!(
                            "Cannot declare a server-named queue for type {}",
                            t.module()
                        )));
                    }
                }
                name = generated_name("amq.gen-");
                self.grants.queue_declare(&name, &m.arguments)?;
            } else if name.starts_with("amq.") {
                return Err(AmqpError::access_refused(format!(
                    "queue name '{name}' contains reserved prefix 'amq.*'"
                )));
            }
            // The arguments are validated for a new queue only; a redeclare is checked for
            // exclusivity, then its flags, then the arguments the queue's type compares (as
            // RabbitMQ does: there an argument the type ignores is not looked at, and an
            // invalid one of those it compares can only be inequivalent, 406 all the same).
            let config = QueueConfig::from_arguments(&m.arguments)
                .map_err(|e| AmqpError::precondition_failed(e.text(&name, &vh)));
            let mut topo = self.vhost.write();
            match topo.queues.get(&name).cloned() {
                Some(q) => {
                    drop(topo);
                    // RabbitMQ's check_exclusive_access (strict), before any other: an
                    // exclusive queue of another connection, and an `exclusive` flag that
                    // differs from the queue's, are both 405 RESOURCE_LOCKED.
                    let owner_matches = match q.exclusive_owner {
                        Some(owner) => m.exclusive && owner == self.id,
                        None => !m.exclusive,
                    };
                    if !owner_matches {
                        return Err(locked(&name, &vh));
                    }
                    let inequivalent =
                        |arg: &str,
                         received: &dyn std::fmt::Display,
                         current: &dyn std::fmt::Display| {
                            AmqpError::precondition_failed(format!(
                            "inequivalent arg '{arg}' for queue '{name}' in vhost '{vh}': received '{received}' but current is '{current}'"
                        ))
                        };
                    if q.durable != durable {
                        return Err(inequivalent("durable", &durable, &q.durable));
                    }
                    if q.auto_delete != m.auto_delete {
                        return Err(inequivalent("auto_delete", &m.auto_delete, &q.auto_delete));
                    }
                    if let Some((arg, text)) = q
                        .config
                        .queue_type
                        .difference(&q.declared().arguments, &m.arguments)
                    {
                        return Err(AmqpError::precondition_failed(format!(
                            "inequivalent arg '{arg}' for queue '{name}' in vhost '{vh}': {text}"
                        )));
                    }
                    q.touch();
                    // A redeclare replies once the queue's declare is committed (it may be
                    // another connection's, still on its way to disk).
                    if q.is_persisted() {
                        commit = self
                            .vhost
                            .record_topology(TopologyChange::QueueDeclared(q.declared()))
                            .map_err(not_persisted)?;
                    }
                    q.counts()
                }
                None => {
                    let config = config?;
                    if let Some(property) =
                        config
                            .queue_type
                            .refused_property(m.durable, m.exclusive, m.auto_delete)
                    {
                        return Err(AmqpError::precondition_failed(format!(
                            "invalid property '{property}' for queue '{name}' in vhost '{vh}'"
                        )));
                    }
                    let owner = m.exclusive.then_some(self.id);
                    let q = Queue::new(name.clone(), durable, m.auto_delete, owner, config)
                        .with_arguments(m.arguments.clone());
                    let q = self.vhost.insert_queue(&mut topo, q);
                    if q.is_persisted() {
                        commit = self
                            .vhost
                            .record_topology(TopologyChange::QueueDeclared(q.declared()))
                            .map_err(not_persisted)?;
                    }
                    if m.exclusive {
                        self.exclusive_queues.push(name.clone());
                    }
                    (0, 0)
                }
            }
        };
        if !m.passive {
            self.vhost.stats.queue_declared();
        }
        if let Some(channel) = self.channels.get_mut(&ch) {
            channel.last_queue = Some(name.clone());
        }
        if !m.nowait {
            self.reply_when_committed(ch, declare_ok(&name, messages, consumers), commit);
        }
        Ok(())
    }

    /// `queue.bind`.
    pub(crate) fn queue_bind(&mut self, ch: u16, m: queue::Bind) -> Result<(), AmqpError> {
        let (qname, xname) = (m.queue.as_str(), m.exchange.as_str());
        if xname.is_empty() {
            return Err(default_exchange());
        }
        // RabbitMQ's order (rabbit_binding:add): the exchange, then the queue must exist
        // (404), the binding's arguments be valid for the exchange type (406), and only then
        // the queue be usable by this connection (405).
        let kind = self
            .vhost
            .read()
            .exchanges
            .get(xname)
            .map(|x| x.kind)
            .ok_or_else(|| no_exchange(xname, &self.vhost.name))?;
        if self.vhost.queue(qname).is_none() {
            return Err(no_queue(qname, &self.vhost.name));
        }
        validate_binding(kind, &m.arguments)?;
        self.usable_queue(qname)?;
        let commit = {
            let mut topo = self.vhost.write();
            if !topo.exchanges.contains_key(xname) {
                return Err(no_exchange(xname, &self.vhost.name));
            }
            let binding = Binding {
                destination: Destination::Queue(qname.to_owned()),
                routing_key: m.routing_key.as_str().to_owned(),
                arguments: m.arguments,
            };
            self.vhost
                .add_binding(&mut topo, xname, binding)
                .map_err(not_persisted)?
        };
        self.reply_unless_nowait(
            ch,
            m.nowait,
            AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
            commit,
        );
        Ok(())
    }

    /// `queue.unbind`: idempotent on absence, as in RabbitMQ 3.x (`rabbit_binding:remove`):
    /// when the binding does not exist (whether or not its queue or exchange does) the answer
    /// is `unbind-ok`; only an existing binding is checked against the queue's exclusive
    /// owner (405). aio-pika's RPC pattern relies on this: it unbinds its auto-deleted reply
    /// queue from an auto-deleted exchange after both are gone.
    pub(crate) fn queue_unbind(&mut self, ch: u16, m: queue::Unbind) -> Result<(), AmqpError> {
        let (qname, xname) = (m.queue.as_str(), m.exchange.as_str());
        if xname.is_empty() {
            return Err(default_exchange());
        }
        let queue = self.vhost.queue(qname);
        let commit = {
            let mut topo = self.vhost.write();
            let binding = Binding {
                destination: Destination::Queue(qname.to_owned()),
                routing_key: m.routing_key.as_str().to_owned(),
                arguments: m.arguments,
            };
            let bound = topo
                .exchanges
                .get(xname)
                .is_some_and(|x| x.bindings.contains(&binding));
            if bound
                && queue
                    .as_ref()
                    .is_some_and(|q| q.exclusive_owner.is_some_and(|o| o != self.id))
            {
                return Err(locked(qname, &self.vhost.name));
            }
            self.vhost
                .remove_binding(&mut topo, xname, &binding)
                .map_err(not_persisted)?
        };
        self.reply_when_committed(
            ch,
            AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
            commit,
        );
        Ok(())
    }

    /// `queue.purge`: drops ready messages (unacked ones stay). `purge-ok` waits until the
    /// store has committed their removal: purged messages must not come back after a crash.
    pub(crate) fn queue_purge(&mut self, ch: u16, m: queue::Purge) -> Result<(), AmqpError> {
        let q = self.usable_queue(m.queue.as_str())?;
        let message_count = q.purge();
        if !m.nowait {
            let commit = if q.is_persisted() && message_count > 0 {
                self.vhost.store.barrier()
            } else {
                None
            };
            self.reply_when_committed(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })),
                commit,
            );
        }
        Ok(())
    }

    /// `queue.delete` (idempotent for a missing queue, as in RabbitMQ 3.x).
    pub(crate) fn queue_delete(&mut self, ch: u16, m: queue::Delete) -> Result<(), AmqpError> {
        let name = m.queue.as_str();
        let deleted = match self.vhost.queue(name) {
            None => None,
            Some(q) => {
                if q.exclusive_owner.is_some_and(|o| o != self.id) {
                    return Err(locked(name, &self.vhost.name));
                }
                if let Some(flag) = conditional_flag(&m) {
                    // RabbitMQ cannot delete a quorum queue conditionally and closes the
                    // connection saying so, whatever the queue holds. The same here (the
                    // queue is a plain one underneath), so that code tried on the bundled
                    // broker does not first fail on a RabbitMQ cluster.
                    if string_field(&q.arguments, "x-queue-type").as_deref() == Some("quorum") {
                        return Err(AmqpError::not_implemented(format!(
                            "cannot delete queue '{name}' in vhost '{}'. queue.delete operations \
                             with {flag} flag set are not supported by quorum queues",
                            self.vhost.name
                        )));
                    }
                }
                let (messages, consumers) = q.counts();
                if m.if_unused && consumers > 0 {
                    return Err(AmqpError::precondition_failed(format!(
                        "queue '{name}' in vhost '{}' in use",
                        self.vhost.name
                    )));
                }
                if m.if_empty && messages > 0 {
                    return Err(AmqpError::precondition_failed(format!(
                        "queue '{name}' in vhost '{}' is not empty",
                        self.vhost.name
                    )));
                }
                self.vhost.delete_queue_now(name)
            }
        };
        // Absent (here): the store confirms it holds no such queue either (another
        // connection's deletion of it may still be on its way to disk).
        let (message_count, commit) = deleted.unwrap_or_else(|| (0, self.vhost.store.barrier()));
        self.exclusive_queues.retain(|q| q != name);
        self.reply_unless_nowait(
            ch,
            m.nowait,
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                message_count,
            })),
            commit,
        );
        Ok(())
    }
}

/// The condition flag of a `queue.delete` as RabbitMQ names it (`if-unused` first), if any.
fn conditional_flag(m: &queue::Delete) -> Option<&'static str> {
    if m.if_unused {
        Some("if-unused")
    } else if m.if_empty {
        Some("if-empty")
    } else {
        None
    }
}

fn declare_ok(name: &str, message_count: u32, consumer_count: u32) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
        queue: ShortString::try_new(name).unwrap_or_default(),
        message_count,
        consumer_count,
    }))
}

/// The first argument whose value differs between two declarations, in RabbitMQ's names.
pub(crate) fn config_difference(a: &QueueConfig, b: &QueueConfig) -> Option<&'static str> {
    // In RabbitMQ's order of comparison: the first that differs is named.
    [
        ("x-message-ttl", a.message_ttl != b.message_ttl),
        ("x-expires", a.expires != b.expires),
        ("x-max-length", a.max_length != b.max_length),
        (
            "x-max-length-bytes",
            a.max_length_bytes != b.max_length_bytes,
        ),
        (
            "x-overflow",
            a.overflow != b.overflow || a.overflow_declared != b.overflow_declared,
        ),
        (
            "x-dead-letter-exchange",
            a.dead_letter_exchange != b.dead_letter_exchange,
        ),
        (
            "x-dead-letter-routing-key",
            a.dead_letter_routing_key != b.dead_letter_routing_key,
        ),
        ("x-max-priority", a.max_priority != b.max_priority),
        ("x-queue-mode", a.queue_mode != b.queue_mode),
    ]
    .into_iter()
    .find_map(|(argument, differs)| differs.then_some(argument))
}
