//! The `exchange` class: declare, delete, bind, unbind (exchange-to-exchange).

use amq_protocol::protocol::{exchange, AMQPClass};

use super::Session;
use super::{default_exchange, no_exchange, not_persisted, validate_binding};
use crate::error::AmqpError;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::persistence::TopologyChange;
use crate::vhost;

fn inequivalent(arg: &str, name: &str, vhost: &str, received: &str, current: &str) -> AmqpError {
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
    ))
}

impl Session {
    /// `exchange.declare`.
    pub(crate) fn exchange_declare(
        &mut self,
        ch: u16,
        m: exchange::Declare,
    ) -> Result<(), AmqpError> {
        let name = m.exchange.as_str();
        let vh = self.vhost.name.clone();
        let mut commit = None;
        if m.passive {
            if name.is_empty() {
                return Err(default_exchange());
            }
            if !self.vhost.read().exchanges.contains_key(name) {
                return Err(no_exchange(name, &vh));
            }
        } else {
            let kind = ExchangeKind::parse(m.kind.as_str()).ok_or_else(|| {
                AmqpError::command_invalid(format!("unknown exchange type '{}'", m.kind.as_str()))
            })?;
            if name.is_empty() {
                return Err(default_exchange());
            }
            let mut topo = self.vhost.write();
            let exists = topo.exchanges.contains_key(name);
            match topo.exchanges.get(name) {
                Some(x) => {
                    if x.kind != kind {
                        return Err(inequivalent("type", name, &vh, kind.name(), x.kind.name()));
                    }
                    for (arg, received, current) in [
                        ("durable", m.durable, x.durable),
                        ("auto_delete", m.auto_delete, x.auto_delete),
                        ("internal", m.internal, x.internal),
                    ] {
                        if received != current {
                            return Err(inequivalent(
                                arg,
                                name,
                                &vh,
                                &received.to_string(),
                                &current.to_string(),
                            ));
                        }
                    }
                    if x.alternate
                        != Exchange::new(name, kind, false, false, false, m.arguments.clone())
                            .alternate
                    {
                        return Err(inequivalent("alternate-exchange", name, &vh, "", ""));
                    }
                }
                None => {
                    if name.starts_with("amq.") {
                        return Err(AmqpError::access_refused(format!(
                            "exchange name '{name}' contains reserved prefix 'amq.*'"
                        )));
                    }
                    let exchange = Exchange::new(
                        name,
                        kind,
                        m.durable,
                        m.auto_delete,
                        m.internal,
                        m.arguments,
                    );
                    if m.durable {
                        commit = self
                            .vhost
                            .record_topology(TopologyChange::ExchangeDeclared(exchange.declared()))
                            .map_err(not_persisted)?;
                    }
                    topo.exchanges.insert(name.to_owned(), exchange);
                }
            }
            // A redeclare replies once the exchange's declare is committed (it may be another
            // connection's, still on its way to disk). The predeclared ones are not stored.
            if let Some(x) = topo.exchanges.get(name).filter(|x| x.durable) {
                if exists && !name.starts_with("amq.") {
                    commit = self
                        .vhost
                        .record_topology(TopologyChange::ExchangeDeclared(x.declared()))
                        .map_err(not_persisted)?;
                }
            }
        }
        self.reply_unless_nowait(
            ch,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
            commit,
        );
        Ok(())
    }

    /// `exchange.delete` (idempotent for a missing exchange, as in RabbitMQ 3.x).
    pub(crate) fn exchange_delete(
        &mut self,
        ch: u16,
        m: exchange::Delete,
    ) -> Result<(), AmqpError> {
        let name = m.exchange.as_str();
        if name.is_empty() {
            return Err(default_exchange());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' is not allowed",
                self.vhost.name
            )));
        }
        let commit = {
            let mut topo = self.vhost.write();
            let deleted = match topo.exchanges.get(name) {
                Some(x) => {
                    if m.if_unused && !x.bindings.is_empty() {
                        return Err(AmqpError::precondition_failed(format!(
                            "exchange '{name}' in vhost '{}' in use",
                            self.vhost.name
                        )));
                    }
                    vhost::delete_exchange(&mut topo, name)
                }
                // Absent here: the store confirms it holds none either (another connection's
                // deletion of it may still be on its way to disk).
                None => vec![vhost::DeletedExchange {
                    name: name.to_owned(),
                    durable: true,
                }],
            };
            self.vhost
                .record_deleted_exchanges(&deleted)
                .map_err(not_persisted)?
        };
        self.reply_unless_nowait(
            ch,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
            commit,
        );
        Ok(())
    }

    /// `exchange.bind`: destination exchange receives what source routes to it.
    pub(crate) fn exchange_bind(&mut self, ch: u16, m: exchange::Bind) -> Result<(), AmqpError> {
        let (src, dst) = (m.source.as_str(), m.destination.as_str());
        if src.is_empty() || dst.is_empty() {
            return Err(default_exchange());
        }
        let commit = {
            let mut topo = self.vhost.write();
            // RabbitMQ's order: the source, then the destination must exist (404), then the
            // arguments be valid for the source's type (406).
            let Some(kind) = topo.exchanges.get(src).map(|x| x.kind) else {
                return Err(no_exchange(src, &self.vhost.name));
            };
            if !topo.exchanges.contains_key(dst) {
                return Err(no_exchange(dst, &self.vhost.name));
            }
            validate_binding(kind, &m.arguments)?;
            let binding = Binding {
                destination: Destination::Exchange(dst.to_owned()),
                routing_key: m.routing_key.as_str().to_owned(),
                arguments: m.arguments,
            };
            self.vhost
                .add_binding(&mut topo, src, binding)
                .map_err(not_persisted)?
        };
        self.reply_unless_nowait(
            ch,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
            commit,
        );
        Ok(())
    }

    /// `exchange.unbind` (idempotent).
    pub(crate) fn exchange_unbind(
        &mut self,
        ch: u16,
        m: exchange::Unbind,
    ) -> Result<(), AmqpError> {
        let (src, dst) = (m.source.as_str(), m.destination.as_str());
        if src.is_empty() || dst.is_empty() {
            return Err(default_exchange());
        }
        let commit = {
            let mut topo = self.vhost.write();
            let binding = Binding {
                destination: Destination::Exchange(dst.to_owned()),
                routing_key: m.routing_key.as_str().to_owned(),
                arguments: m.arguments,
            };
            self.vhost
                .remove_binding(&mut topo, src, &binding)
                .map_err(not_persisted)?
        };
        self.reply_unless_nowait(
            ch,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
            commit,
        );
        Ok(())
    }
}
