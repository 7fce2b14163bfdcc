//! The segment log plugged into the broker (was `store/seam.rs`: the store below knows records,
//! not queues; this adapter on the broker side knows both): `store::DurableQueues` as the
//! broker's [`crate::persistence::Persistence`], the AMQP encodings the log keeps
//! (content-header properties, argument tables), and putting the recovered topology and
//! messages back into the vhosts at start.
//!
//! Recovered messages are read back at start in runs of adjacent records; past the memory
//! budget their bodies are dropped again right away (paged out), and read back with
//! [`DurableQueues::read_many`] when they near the head of their queue.

use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{FieldTable, ShortString};
use bytes::Bytes;

use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::message::{Account, Message};
use crate::persistence::{self, BindingChange, Durability, TopologyChange};
use crate::queue::{Queue, QueueConfig};
use crate::store::{
    BindingDef, BindingDestination, Commit, DurableQueues, ExchangeDef, PersistentMessage,
    Recovered, Store, StoreError,
};
use crate::vhost::VHosts;

impl persistence::Persistence for DurableQueues {
    fn enqueue(&self, vhost: &str, queue: &str, seq: u64, message: &Arc<Message>) -> Durability {
        store_message(message, |stored| {
            DurableQueues::enqueue(self, vhost, queue, seq, stored)
        })
    }

    fn enqueue_dead_letter(
        &self,
        vhost: &str,
        queue: &str,
        seq: u64,
        message: &Arc<Message>,
    ) -> Durability {
        store_message(message, |stored| {
            DurableQueues::enqueue_moved(self, vhost, queue, seq, stored)
        })
    }

    fn remove(&self, vhost: &str, queue: &str, seq: u64) {
        DurableQueues::remove(self, vhost, queue, seq);
    }

    fn refusals(&self) -> u64 {
        DurableQueues::refusals(self)
    }

    fn remove_moved(&self, vhost: &str, queue: &str, seq: u64, refusals: u64) {
        DurableQueues::remove_moved(self, vhost, queue, seq, refusals);
    }

    fn can_page(&self) -> bool {
        true
    }

    fn read(
        &self,
        vhost: &str,
        queue: &str,
        seqs: &[u64],
        account: &Arc<dyn Account>,
    ) -> Vec<Option<Arc<Message>>> {
        self.read_many(vhost, queue, seqs)
            .into_iter()
            .map(|stored| stored.map(|stored| Arc::new(message_of(stored, account))))
            .collect()
    }

    fn stats(&self) -> Option<crate::store::StoreStats> {
        Some(self.store().stats())
    }

    fn record_topology(
        &self,
        vhost: &str,
        change: TopologyChange<'_>,
    ) -> Result<Option<Commit>, StoreError> {
        let store = self.store();
        let commit = match change {
            TopologyChange::ExchangeDeclared(x) => store.declare_exchange(ExchangeDef {
                vhost: vhost.to_owned(),
                name: x.name.to_owned(),
                kind: x.kind.to_owned(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: encode_table(x.arguments),
            })?,
            TopologyChange::ExchangeDeleted(name) => store.delete_exchange(vhost, name)?,
            TopologyChange::QueueDeclared(q) => {
                self.declare_queue(vhost, q.name, q.auto_delete, encode_table(&q.arguments))?
            }
            TopologyChange::QueueDeleted(name) => self.delete_queue(vhost, name)?,
            TopologyChange::Bound(binding) => store.bind(binding_def(vhost, binding))?,
            TopologyChange::Unbound(binding) => store.unbind(&binding_def(vhost, binding))?,
        };
        Ok(Some(commit))
    }

    fn barrier(&self) -> Option<Commit> {
        Some(self.store().barrier())
    }
}

/// Hands `message` in its stored form to `append` (an enqueue of [`DurableQueues`]) and says
/// what its publisher waits for.
fn store_message(
    message: &Message,
    append: impl FnOnce(PersistentMessage<'_>) -> Option<tokio::sync::oneshot::Receiver<()>>,
) -> Durability {
    let properties = encode_properties(&message.properties);
    let stored = PersistentMessage {
        exchange: message.exchange.as_str(),
        routing_key: message.routing_key.as_str(),
        properties: &properties,
        body: &message.body,
    };
    match append(stored) {
        None => Durability::Durable,
        Some(committed) => Durability::Pending(committed),
    }
}

/// The stored form of `binding` in `vhost`.
fn binding_def(vhost: &str, binding: BindingChange<'_>) -> BindingDef {
    BindingDef {
        vhost: vhost.to_owned(),
        source: binding.source.to_owned(),
        destination_kind: if binding.to_exchange {
            BindingDestination::Exchange
        } else {
            BindingDestination::Queue
        },
        destination: binding.destination.to_owned(),
        routing_key: binding.routing_key.to_owned(),
        arguments: encode_table(binding.arguments),
    }
}

/// Opens the store in `data_dir`, puts what it recovered back into `vhosts`, and returns the
/// seam to hand to the vhosts. Runs the blocking open on the blocking pool.
pub(crate) async fn open(
    config: crate::store::StoreConfig,
) -> Result<(Arc<DurableQueues>, Recovered), StoreError> {
    let (store, recovered) = tokio::task::spawn_blocking(move || Store::open(config))
        .await
        .map_err(|e| StoreError::io("store open", std::io::Error::other(e)))??;
    let queues = Arc::new(DurableQueues::new(Arc::new(store), &recovered));
    Ok((queues, recovered))
}

/// Declares the recovered topology in `vhosts` and puts each durable queue's messages back, in
/// order, marked redelivered. Entities of vhosts that do not exist are skipped with a warning
/// (they stay on disk until their vhost's topology is next persisted).
pub(crate) fn restore(
    vhosts: &VHosts,
    queues: &DurableQueues,
    recovered: Recovered,
) -> Result<(), StoreError> {
    let defs = &recovered.definitions;
    for x in &defs.exchanges {
        let (Some(vhost), Some(kind)) = (vhosts.get(&x.vhost), ExchangeKind::parse(&x.kind)) else {
            tracing::warn!(vhost = %x.vhost, exchange = %x.name, "skipping a stored exchange");
            continue;
        };
        let exchange = Exchange::new(
            &x.name,
            kind,
            true,
            x.auto_delete,
            x.internal,
            decode_table(&x.arguments),
        );
        vhost
            .write()
            .exchanges
            .entry(x.name.clone())
            .or_insert(exchange);
    }
    for q in &defs.queues {
        let Some(vhost) = vhosts.get(&q.vhost) else {
            tracing::warn!(vhost = %q.vhost, queue = %q.name, "skipping a stored queue");
            continue;
        };
        let mut arguments = decode_table(&q.arguments);
        let config = QueueConfig::from_arguments(&arguments).or_else(|e| {
            let text = e.text(&q.name, &q.vhost);
            tracing::warn!(queue = %q.name, %text, "stored queue arguments no longer parse");
            arguments = FieldTable::default();
            QueueConfig::from_arguments(&arguments)
        });
        // An empty argument table always parses.
        let Ok(config) = config else { continue };
        let queue =
            Queue::new(q.name.clone(), true, q.auto_delete, None, config).with_arguments(arguments);
        let mut topo = vhost.write();
        if !topo.queues.contains_key(&q.name) {
            vhost.insert_queue(&mut topo, queue);
        }
    }
    for b in &defs.bindings {
        let Some(vhost) = vhosts.get(&b.vhost) else {
            continue;
        };
        let mut topo = vhost.write();
        let Some(source) = topo.exchanges.get_mut(&b.source) else {
            continue;
        };
        let binding = Binding {
            destination: match b.destination_kind {
                BindingDestination::Queue => Destination::Queue(b.destination.clone()),
                BindingDestination::Exchange => Destination::Exchange(b.destination.clone()),
            },
            routing_key: b.routing_key.clone(),
            arguments: decode_table(&b.arguments),
        };
        if !source.bindings.contains(&binding) {
            source.bindings.push(binding);
        }
    }
    let mut restored = 0usize;
    let account: Arc<dyn Account> = vhosts.memory.clone();
    for recovered_queue in &recovered.queues {
        let Some(def) = defs.queues.iter().find(|q| q.id == recovered_queue.id) else {
            continue;
        };
        let Some(queue) = vhosts.get(&def.vhost).and_then(|v| v.queue(&def.name)) else {
            continue;
        };
        // Read in runs (one `pread` per run of adjacent records); past the memory budget the
        // bodies are paged out again as soon as their position is registered.
        for positions in recovered_queue.messages.chunks(256) {
            for (stored, &position) in queues
                .store()
                .read_many(positions)
                .into_iter()
                .zip(positions)
            {
                let seq = queue.restore(Arc::new(message_of(stored?, &account)));
                queues.restore(&def.vhost, &def.name, seq, position);
                queue.page_out(seq);
                restored += 1;
            }
        }
    }
    tracing::info!(
        exchanges = defs.exchanges.len(),
        queues = defs.queues.len(),
        bindings = defs.bindings.len(),
        messages = restored,
        "restored durable topology and persistent messages"
    );
    Ok(())
}

/// The broker's message for a record read back from the log.
fn message_of(stored: crate::store::StoredMessage, account: &Arc<dyn Account>) -> Message {
    Message::new(
        account,
        ShortString::from(stored.exchange),
        ShortString::from(stored.routing_key),
        decode_properties(&stored.properties),
        stored.body,
        None,
    )
}

/// Encodes content-header properties (flags and list, 0-9-1 §4.2.6.1) for the log.
fn encode_properties(properties: &AMQPProperties) -> Vec<u8> {
    // Writing into a Vec cannot fail for lack of space, and the properties were parsed by the
    // same codec; an error would be a codec bug, stored as "no properties".
    gen_properties(properties)(WriteContext::from(Vec::with_capacity(64)))
        .map(|ctx| ctx.write)
        .unwrap_or_else(|_| vec![0, 0])
}

/// Decodes properties written by [`encode_properties`] (default properties if they do not
/// parse, which a checksummed record written by us cannot cause).
fn decode_properties(bytes: &[u8]) -> AMQPProperties {
    parse_properties(bytes)
        .map(|(_, properties)| properties)
        .unwrap_or_default()
}

/// Encodes a field table (declare or bind arguments) for the definitions snapshot.
fn encode_table(table: &FieldTable) -> Bytes {
    gen_field_table(table)(WriteContext::from(Vec::new()))
        .map(|ctx| Bytes::from(ctx.write))
        .unwrap_or_default()
}

/// Decodes a field table written by [`encode_table`] (empty if it does not parse).
fn decode_table(bytes: &[u8]) -> FieldTable {
    if bytes.is_empty() {
        return FieldTable::default();
    }
    parse_field_table(bytes)
        .map(|(_, table)| table)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use amq_protocol::types::AMQPValue;

    use super::*;
    use crate::field_value::table;

    #[test]
    fn queue_arguments_parse_back_to_the_same_config() {
        let declared = table(&[
            ("x-message-ttl", AMQPValue::LongInt(5000)),
            ("x-max-length", AMQPValue::ShortInt(10)),
            ("x-max-priority", AMQPValue::ShortShortUInt(9)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString("dlx".into()),
            ),
            ("x-queue-mode", AMQPValue::LongString("lazy".into())),
        ]);
        let config = QueueConfig::from_arguments(&declared).unwrap();
        let stored = decode_table(&encode_table(&config.to_arguments()));
        assert_eq!(QueueConfig::from_arguments(&stored).unwrap(), config);
    }

    #[test]
    fn properties_and_tables_round_trip() {
        let headers = table(&[("x-retry", AMQPValue::LongInt(3))]);
        let properties = AMQPProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/msgpack".into())
            .with_headers(headers.clone());
        let bytes = encode_properties(&properties);
        assert_eq!(decode_properties(&bytes), properties);
        assert_eq!(decode_table(&encode_table(&headers)), headers);
        assert_eq!(decode_table(&[]), FieldTable::default());
    }
}
