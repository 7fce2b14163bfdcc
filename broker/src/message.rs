//! A published message: routing data, properties, and a body shared by every queue it reaches,
//! with the memory it holds charged to the broker's accounting for as long as it lives
//! ([`Held`]).

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::Bytes;

/// Bytes charged per message besides its names, properties and body: the `Message` itself,
/// its `Arc` header, and allocator slack.
pub(crate) const MESSAGE_OVERHEAD: u64 = std::mem::size_of::<Message>() as u64 + 128;

/// Bytes charged per field-table entry besides its key's and value's own bytes: the decoded
/// entry (a `ShortString` key and an `AMQPValue`) in a B-tree node, with the nodes' slack and
/// the key's allocation.
const TABLE_ENTRY_OVERHEAD: u64 =
    (std::mem::size_of::<ShortString>() + std::mem::size_of::<AMQPValue>()) as u64 * 2 + 32;

/// Where a [`Held`] charges and gives back bytes: the broker's memory accounting
/// (`crate::memory::Memory`), which lives in a layer above this one.
pub(crate) trait Account: Send + Sync + std::fmt::Debug {
    /// Counts `bytes` more as held.
    fn charge(&self, bytes: u64);
    /// Counts `bytes` less (what an earlier `charge` counted).
    fn release(&self, bytes: u64);
}

/// Bytes charged to an [`Account`] while this value lives; dropping it gives them back.
/// Messages share one (`Arc<Held>`) for the read block their bodies are slices of; a publish
/// being assembled holds one for the frames received so far.
#[derive(Debug)]
pub(crate) struct Held {
    /// Where the bytes are charged.
    account: Arc<dyn Account>,
    /// The bytes charged so far.
    bytes: u64,
}

impl Held {
    /// Charges `bytes` to `account` until the returned value is dropped.
    pub(crate) fn charge(account: &Arc<dyn Account>, bytes: u64) -> Self {
        account.charge(bytes);
        Self {
            account: account.clone(),
            bytes,
        }
    }

    /// Charges `bytes` more, given back with the rest.
    pub(crate) fn grow(&mut self, bytes: u64) {
        self.account.charge(bytes);
        self.bytes += bytes;
    }

    /// Where the bytes are charged.
    fn account(&self) -> &Arc<dyn Account> {
        &self.account
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.account.release(self.bytes);
    }
}

/// One message as published. Immutable once built; queues hold it in an `Arc`, so fan-out to N
/// queues shares one body buffer (dead-lettering builds a new `Message` with new headers but
/// the same body `Bytes`).
#[derive(Debug)]
pub(crate) struct Message {
    /// The exchange it was published to (`""` for the default exchange).
    pub(crate) exchange: ShortString,
    /// The routing key it was published with.
    pub(crate) routing_key: ShortString,
    /// The basic content-header properties, as the publisher sent them.
    pub(crate) properties: AMQPProperties,
    /// The body; a slice of the publisher's read buffer when it arrived in one frame.
    pub(crate) body: Bytes,
    /// What this message holds, charged while it lives (given back by its `Drop`):
    /// [`MESSAGE_OVERHEAD`], its names and properties, and its body unless `charge` is the
    /// body's read block, which accounts for it.
    bytes: u64,
    /// Where `bytes` are charged.
    charge: Charge,
}

/// Where a message's own bytes are charged.
#[derive(Debug)]
enum Charge {
    /// To this account (`None`: nowhere, in tests); the body is the message's own.
    Own(Option<Arc<dyn Account>>),
    /// To the account of this read block's charge, shared by every message that keeps a
    /// slice of the block (the block is freed only when the last of them is, however small
    /// their bodies). Reaching the account through the block spares a message its own
    /// reference-count traffic on the account.
    Block(Arc<Held>),
}

impl Drop for Message {
    fn drop(&mut self) {
        let account = match &self.charge {
            Charge::Own(account) => account.as_ref(),
            Charge::Block(block) => Some(block.account()),
        };
        if let Some(account) = account {
            account.release(self.bytes);
        }
    }
}

impl Message {
    /// A message, charged to `account` for what it holds (see [`Message::held_bytes`]);
    /// `block` is the charge of the read block `body` is a slice of, if it is one.
    pub(crate) fn new(
        account: &Arc<dyn Account>,
        exchange: ShortString,
        routing_key: ShortString,
        properties: AMQPProperties,
        body: Bytes,
        block: Option<Arc<Held>>,
    ) -> Self {
        let body_bytes = if block.is_some() {
            0
        } else {
            body.len() as u64
        };
        let bytes = MESSAGE_OVERHEAD
            + exchange.as_str().len() as u64
            + routing_key.as_str().len() as u64
            + properties_cost(&properties)
            + body_bytes;
        let charge = match block {
            Some(block) => {
                block.account().charge(bytes);
                Charge::Block(block)
            }
            None => {
                account.charge(bytes);
                Charge::Own(Some(account.clone()))
            }
        };
        Self {
            exchange,
            routing_key,
            properties,
            body,
            bytes,
            charge,
        }
    }

    /// A message charged to nothing (tests).
    #[cfg(test)]
    pub(crate) fn unaccounted(
        exchange: ShortString,
        routing_key: ShortString,
        properties: AMQPProperties,
        body: Bytes,
    ) -> Self {
        Self {
            exchange,
            routing_key,
            properties,
            body,
            bytes: 0,
            charge: Charge::Own(None),
        }
    }

    /// The bytes this message charges for itself (the read block its body may share is
    /// charged apart).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> u64 {
        self.bytes
    }

    /// The charge of the read block the body is a slice of, if it is one.
    pub(crate) fn block(&self) -> Option<&Arc<Held>> {
        match &self.charge {
            Charge::Block(block) => Some(block),
            Charge::Own(_) => None,
        }
    }

    /// True when the publisher asked for `delivery_mode = 2` (persistent).
    pub(crate) fn is_persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// The per-message TTL from the `expiration` property, in milliseconds, if valid.
    pub(crate) fn expiration_ms(&self) -> Option<u64> {
        self.properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok())
    }

    /// The message priority (0 when absent).
    pub(crate) fn priority(&self) -> u8 {
        self.properties.priority().unwrap_or(0)
    }
}

/// What decoded properties hold on the heap: their strings and their `headers` table.
fn properties_cost(p: &AMQPProperties) -> u64 {
    let strings = [
        p.content_type(),
        p.content_encoding(),
        p.correlation_id(),
        p.reply_to(),
        p.expiration(),
        p.message_id(),
        p.kind(),
        p.user_id(),
        p.app_id(),
        p.cluster_id(),
    ];
    let strings: u64 = strings
        .iter()
        .map(|s| s.as_ref().map_or(0, |s| s.as_str().len() as u64))
        .sum();
    strings + p.headers().as_ref().map_or(0, table_cost)
}

/// What a decoded field table holds: per entry [`TABLE_ENTRY_OVERHEAD`], its key and its
/// value's heap bytes. Nested tables and arrays are walked with an explicit stack (their depth
/// is bounded where they are decoded, but the walk does not rely on it); the stack is only
/// allocated when a nested value is met, so the usual flat headers table of a message costs no
/// allocation on the publish path.
fn table_cost(table: &FieldTable) -> u64 {
    let mut nested: Vec<&AMQPValue> = Vec::new();
    let mut cost = entries_cost(table, &mut nested);
    while let Some(value) = nested.pop() {
        match value {
            AMQPValue::FieldTable(t) => cost += entries_cost(t, &mut nested),
            AMQPValue::FieldArray(a) => {
                cost += a.as_slice().len() as u64 * std::mem::size_of::<AMQPValue>() as u64;
                for v in a.as_slice() {
                    cost += value_cost(v, &mut nested);
                }
            }
            _ => {}
        }
    }
    cost
}

/// One table's entries: overhead, keys and their values (nested ones pushed on `nested`).
fn entries_cost<'a>(table: &'a FieldTable, nested: &mut Vec<&'a AMQPValue>) -> u64 {
    table
        .inner()
        .iter()
        .map(|(k, v)| TABLE_ENTRY_OVERHEAD + k.as_str().len() as u64 + value_cost(v, nested))
        .sum()
}

/// A value's own heap bytes; a table or an array is pushed on `nested` to be walked later.
fn value_cost<'a>(value: &'a AMQPValue, nested: &mut Vec<&'a AMQPValue>) -> u64 {
    match value {
        AMQPValue::LongString(s) => s.len() as u64,
        AMQPValue::ShortString(s) => s.as_str().len() as u64,
        AMQPValue::ByteArray(b) => b.len() as u64,
        AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) => {
            nested.push(value);
            0
        }
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Default)]
    struct Counter(AtomicU64);

    impl Account for Counter {
        fn charge(&self, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
        fn release(&self, bytes: u64) {
            self.0.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_message_is_charged_while_it_lives_and_a_block_while_any_slice_does() {
        let counter = Arc::new(Counter::default());
        let account: Arc<dyn Account> = counter.clone();
        let used = || counter.0.load(Ordering::Relaxed);
        let block = Arc::new(Held::charge(&account, 65_536));
        let buffer = Bytes::from(vec![0u8; 65_536]);
        let sliced = Message::new(
            &account,
            "".into(),
            "q".into(),
            AMQPProperties::default(),
            buffer.slice(0..1),
            Some(block.clone()),
        );
        drop(block);
        assert_eq!(used(), 65_536 + MESSAGE_OVERHEAD + 1);
        let owned = Message::new(
            &account,
            "".into(),
            "q".into(),
            AMQPProperties::default(),
            Bytes::from(vec![0u8; 1000]),
            None,
        );
        assert_eq!(owned.held_bytes(), MESSAGE_OVERHEAD + 1 + 1000);
        drop(sliced);
        assert_eq!(
            used(),
            MESSAGE_OVERHEAD + 1 + 1000,
            "the block went with its last slice"
        );
        drop(owned);
        assert_eq!(used(), 0);
    }

    #[test]
    fn headers_are_charged_by_what_they_hold() {
        let mut inner = FieldTable::default();
        inner.insert("k".into(), AMQPValue::LongString(vec![b'x'; 500].into()));
        let mut headers = FieldTable::default();
        for i in 0..100 {
            headers.insert(format!("h{i}").into(), AMQPValue::FieldTable(inner.clone()));
        }
        let properties = AMQPProperties::default().with_headers(headers);
        let cost = properties_cost(&properties);
        assert!(cost >= 100 * (500 + 2 * TABLE_ENTRY_OVERHEAD), "{cost}");
    }
}
