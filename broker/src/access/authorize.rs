//! Which resource each AMQP method needs, and with which access, as RabbitMQ's
//! `rabbit_channel` checks them (see RabbitMQ's access-control guide, "How permissions work"):
//!
//! | method                      | configure      | write              | read             |
//! |-----------------------------|----------------|--------------------|------------------|
//! | exchange.declare (active)   | exchange       | alternate-exchange | exchange (if AE) |
//! | exchange.declare (passive)  | –              | –                  | –                |
//! | exchange.delete             | exchange       |                    |                  |
//! | exchange.bind / unbind      |                | destination        | source           |
//! | queue.declare (active)      | queue          | dead-letter exch.  | queue (if DLX)   |
//! | queue.declare (passive)     | –              | –                  | –                |
//! | queue.delete                | queue          |                    |                  |
//! | queue.bind / unbind         |                | queue              | exchange         |
//! | queue.purge                 |                |                    | queue            |
//! | basic.publish               |                | exchange           |                  |
//! | basic.consume / basic.get   |                |                    | queue            |
//!
//! A server-named queue (`queue.declare` with an empty name) is checked under its generated
//! name, by the handler once it has one. Consuming the direct reply-to pseudo-queue needs no
//! permission (as in RabbitMQ). Not implemented: topic permissions.

use amq_protocol::protocol::{basic, exchange, queue, AMQPClass};
use amq_protocol::types::FieldTable;

use super::{Access, Grants, ResourceKind};
use crate::error::AmqpError;
use crate::field_value::string_field;
use crate::vhost::REPLY_TO;

use Access::{Configure, Read, Write};
use ResourceKind::{Exchange, Queue};

impl Grants {
    /// Checks every permission `method` needs before it runs.
    pub(crate) fn authorize(&mut self, method: &AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Publish(m)) => {
                self.check(Write, Exchange, m.exchange.as_str())
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(m)) if m.queue.as_str() != REPLY_TO => {
                self.check(Read, Queue, m.queue.as_str())
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(m)) => {
                self.check(Read, Queue, m.queue.as_str())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) if !m.passive => {
                let name = m.exchange.as_str();
                self.check(Configure, Exchange, name)?;
                if let Some(ae) = string_field(&m.arguments, "alternate-exchange") {
                    self.check(Read, Exchange, name)?;
                    self.check(Write, Exchange, &ae)?;
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(m)) => {
                self.check(Configure, Exchange, m.exchange.as_str())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => {
                self.check_binding(Exchange, m.destination.as_str(), m.source.as_str())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => {
                self.check_binding(Exchange, m.destination.as_str(), m.source.as_str())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(m))
                if !m.passive && !m.queue.as_str().is_empty() =>
            {
                self.queue_declare(m.queue.as_str(), &m.arguments)
            }
            AMQPClass::Queue(queue::AMQPMethod::Delete(m)) => {
                self.check(Configure, Queue, m.queue.as_str())
            }
            AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => {
                self.check_binding(Queue, m.queue.as_str(), m.exchange.as_str())
            }
            AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => {
                self.check_binding(Queue, m.queue.as_str(), m.exchange.as_str())
            }
            AMQPClass::Queue(queue::AMQPMethod::Purge(m)) => {
                self.check(Read, Queue, m.queue.as_str())
            }
            _ => Ok(()),
        }
    }

    /// The checks of a bind or unbind (exchange or queue): write on the destination, then
    /// read on the source exchange.
    fn check_binding(
        &mut self,
        destination_kind: ResourceKind,
        destination: &str,
        source: &str,
    ) -> Result<(), AmqpError> {
        self.check(Write, destination_kind, destination)?;
        self.check(Read, Exchange, source)
    }

    /// The checks of an active `queue.declare` of `name` (also called by the handler with a
    /// server-generated name).
    pub(crate) fn queue_declare(
        &mut self,
        name: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        self.check(Configure, Queue, name)?;
        if let Some(dlx) = string_field(arguments, "x-dead-letter-exchange") {
            self.check(Read, Queue, name)?;
            self.check(Write, Exchange, &dlx)?;
        }
        Ok(())
    }
}
