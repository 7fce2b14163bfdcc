//! `Record`: one entry of the segment log (an enqueue, a removal, a purge, or a durable topology
//! change) and its byte layout.

mod fields;

pub(crate) use fields::{checksum, fits_shortstr, put_shortstr, put_table};
use fields::{str_len, table_len, take_shortstr, take_u32, take_u64, Fields};

use super::QueueId;

/// Bytes before a record's kind: length and checksum.
pub(crate) const RECORD_HEADER_LEN: usize = 8;

/// The longest record the store writes (header included): 512 MiB, far above any sane AMQP body
/// (RabbitMQ's default `max_message_size` is 128 MiB) and well inside the `u32` offsets of a
/// [`super::Position`].
pub const MAX_RECORD_LEN: u64 = 512 * 1024 * 1024;

const KIND_ENQUEUE: u8 = 1;
const KIND_REMOVE: u8 = 2;
const KIND_PURGE: u8 = 3;
const KIND_EXCHANGE_DECLARE: u8 = 4;
const KIND_EXCHANGE_DELETE: u8 = 5;
const KIND_QUEUE_DECLARE: u8 = 6;
const KIND_QUEUE_DELETE: u8 = 7;
const KIND_BIND: u8 = 8;
const KIND_UNBIND: u8 = 9;

/// One entry of the segment log. All integers are big-endian (network order, as in AMQP).
///
/// Every record starts with the same header:
///
/// 1. Length as u32: the number of bytes from field 3 to the end of the record [4 bytes].
/// 2. CRC-32 (IEEE, as zlib's `crc32`) as u32, computed over field 1 followed by field 3 to the
///    end of the record [4 bytes].
/// 3. Kind as u8: 1 = enqueue, 2 = remove, 3 = purge, 4 = exchange declare, 5 = exchange
///    delete, 6 = queue declare, 7 = queue delete, 8 = bind, 9 = unbind [1 byte].
/// 4. Queue id as u64 (see [`super::QueueId`]); 0 in records that name no queue (kinds 4, 5,
///    8 and 9) [8 bytes].
///
/// An **enqueue** (kind 1: a persistent message routed to a durable queue) continues with:
///
/// 5. Exchange name length as u8 [1 byte].
/// 6. Exchange name, UTF-8 (`""` for the default exchange) [exchange length bytes].
/// 7. Routing key length as u8 [1 byte].
/// 8. Routing key, UTF-8 [routing key length bytes].
/// 9. Properties length as u32 [4 bytes].
/// 10. Properties: the AMQP content-header property flags and list (0-9-1 §4.2.6.1), encoded
///     by the broker and opaque to the store [properties length bytes].
/// 11. Body [all remaining bytes].
///
/// A **remove** (kind 2: the message left the queue for good — `basic.ack`, `basic.get` with
/// no-ack, `basic.reject`/`basic.nack` with requeue=false, expiry) continues with:
///
/// 5. Segment number of the removed message's enqueue record as u32 [4 bytes].
/// 6. Byte offset of that enqueue record as u32 [4 bytes].
///
/// A **purge** (kind 3: `queue.purge`) has no more fields: it removes every message of the
/// queue enqueued before it in the log.
///
/// Kinds 4 to 9 log the durable topology, one change per record (see [`super::Definitions`]
/// for the snapshot they are folded into and when). Their strings are *shortstrs*: a u8 length
/// then UTF-8 bytes (AMQP 0-9-1 §4.2.5.3); their *tables* a u32 length then an AMQP field
/// table's encoded bytes, opaque to the store.
///
/// An **exchange declare** (kind 4: a durable exchange was declared, replacing one of the
/// same vhost and name) continues with:
///
/// 5. Vhost, shortstr.
/// 6. Exchange name, shortstr.
/// 7. Exchange type, shortstr (`direct`, `fanout`, `topic`, `headers`).
/// 8. Flags as u8: bit 0 auto-delete, bit 1 internal [1 byte].
/// 9. Declare arguments, table.
///
/// An **exchange delete** (kind 5) continues with the vhost and the exchange name (shortstrs);
/// it also removes every binding from or to that exchange.
///
/// A **queue declare** (kind 6: a durable queue was declared; field 4 is its new id, never
/// used before) continues with the vhost and the queue name (shortstrs), flags as u8 (bit 0
/// auto-delete), and the declare arguments (table).
///
/// A **queue delete** (kind 7; field 4 names the queue) has no more fields: the queue, every
/// binding to it and every message of it are gone.
///
/// A **bind** (kind 8) and an **unbind** (kind 9: remove the equal binding) continue with:
///
/// 5. Vhost, shortstr.
/// 6. Source exchange, shortstr.
/// 7. Destination kind as u8: 0 = queue, 1 = exchange [1 byte].
/// 8. Destination name, shortstr.
/// 9. Routing key, shortstr.
/// 10. Bind arguments, table.
///
/// Not implemented: one record shared by the N queues a message is routed to (each queue gets
/// its own enqueue record), compression, and per-record timestamps (TTL is the broker's job; it
/// reads the `expiration` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A persistent message entered a durable queue.
    Enqueue {
        /// The durable queue.
        queue: QueueId,
        /// The exchange it was published to (at most 255 bytes).
        exchange: &'a [u8],
        /// The routing key it was published with (at most 255 bytes).
        routing_key: &'a [u8],
        /// Encoded content-header properties.
        properties: &'a [u8],
        /// The message body.
        body: &'a [u8],
    },
    /// The message whose enqueue record starts at (`segment`, `offset`) left `queue`.
    Remove {
        /// The durable queue.
        queue: QueueId,
        /// Segment of the enqueue record.
        segment: u32,
        /// Offset of the enqueue record.
        offset: u32,
    },
    /// Every message of `queue` enqueued before this record is gone.
    Purge {
        /// The durable queue.
        queue: QueueId,
    },
    /// A durable exchange was declared (replacing one of the same vhost and name).
    ExchangeDeclare {
        /// Virtual host.
        vhost: &'a str,
        /// Exchange name.
        name: &'a str,
        /// Exchange type.
        kind: &'a str,
        /// Bit 0 auto-delete, bit 1 internal.
        flags: u8,
        /// Encoded declare arguments.
        arguments: &'a [u8],
    },
    /// A durable exchange was deleted, and every binding from or to it.
    ExchangeDelete {
        /// Virtual host.
        vhost: &'a str,
        /// Exchange name.
        name: &'a str,
    },
    /// A durable queue was declared under a new id.
    QueueDeclare {
        /// Its id.
        queue: QueueId,
        /// Virtual host.
        vhost: &'a str,
        /// Queue name.
        name: &'a str,
        /// Bit 0 auto-delete.
        flags: u8,
        /// Encoded declare arguments.
        arguments: &'a [u8],
    },
    /// A durable queue was deleted, with its bindings and messages.
    QueueDelete {
        /// The queue.
        queue: QueueId,
    },
    /// A binding between durable entities was added.
    Bind(BindingRecord<'a>),
    /// A binding between durable entities was removed.
    Unbind(BindingRecord<'a>),
}

/// The fields of a bind or unbind record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BindingRecord<'a> {
    /// Virtual host.
    pub(crate) vhost: &'a str,
    /// Source exchange.
    pub(crate) source: &'a str,
    /// True when `destination` names an exchange, false for a queue.
    pub(crate) to_exchange: bool,
    /// Destination queue or exchange.
    pub(crate) destination: &'a str,
    /// Routing key.
    pub(crate) routing_key: &'a str,
    /// Encoded bind arguments.
    pub(crate) arguments: &'a [u8],
}

/// Why a record's payload does not decode (its checksum was fine, so this is a format error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl<'a> Record<'a> {
    /// True for the records that let compaction free space (a message or a queue gone, a
    /// binding or exchange gone): the topology records a store low on space still accepts.
    pub(crate) fn frees_space(&self) -> bool {
        matches!(
            self,
            Self::Remove { .. }
                | Self::Purge { .. }
                | Self::ExchangeDelete { .. }
                | Self::QueueDelete { .. }
                | Self::Unbind(_)
        )
    }

    /// Length of the encoded record, header included.
    pub(crate) fn encoded_len(&self) -> u64 {
        let payload = match self {
            Self::Enqueue {
                exchange,
                routing_key,
                properties,
                body,
                ..
            } => {
                1 + 8
                    + 1
                    + exchange.len() as u64
                    + 1
                    + routing_key.len() as u64
                    + 4
                    + properties.len() as u64
                    + body.len() as u64
            }
            Self::Remove { .. } => 1 + 8 + 4 + 4,
            Self::Purge { .. } | Self::QueueDelete { .. } => 1 + 8,
            Self::ExchangeDeclare {
                vhost,
                name,
                kind,
                arguments,
                ..
            } => 1 + 8 + str_len(vhost) + str_len(name) + str_len(kind) + 1 + table_len(arguments),
            Self::ExchangeDelete { vhost, name } => 1 + 8 + str_len(vhost) + str_len(name),
            Self::QueueDeclare {
                vhost,
                name,
                arguments,
                ..
            } => 1 + 8 + str_len(vhost) + str_len(name) + 1 + table_len(arguments),
            Self::Bind(b) | Self::Unbind(b) => {
                1 + 8
                    + str_len(b.vhost)
                    + str_len(b.source)
                    + 1
                    + str_len(b.destination)
                    + str_len(b.routing_key)
                    + table_len(b.arguments)
            }
        };
        RECORD_HEADER_LEN as u64 + payload
    }

    /// The queue id of field 4 (0 for records that name no queue).
    pub(crate) fn queue(&self) -> QueueId {
        match *self {
            Self::Enqueue { queue, .. }
            | Self::Remove { queue, .. }
            | Self::Purge { queue }
            | Self::QueueDeclare { queue, .. }
            | Self::QueueDelete { queue } => queue,
            Self::ExchangeDeclare { .. }
            | Self::ExchangeDelete { .. }
            | Self::Bind(_)
            | Self::Unbind(_) => QueueId(0),
        }
    }

    /// True for the records of the durable topology (kinds 4 to 9).
    pub(crate) fn is_topology(&self) -> bool {
        !matches!(
            self,
            Self::Enqueue { .. } | Self::Remove { .. } | Self::Purge { .. }
        )
    }

    /// Appends the encoded record to `out` (no allocation beyond `out` growing). The caller
    /// has checked `encoded_len() <= MAX_RECORD_LEN`, so every length fits a u32, and that the
    /// exchange and routing key are at most 255 bytes, so their lengths fit a u8 (the names of
    /// topology records too: see [`fits_shortstr`]).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // Placeholders for length and CRC, patched below once the payload is in place.
        out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        match *self {
            Self::Enqueue {
                queue,
                exchange,
                routing_key,
                properties,
                body,
            } => {
                out.push(KIND_ENQUEUE);
                out.extend_from_slice(&queue.0.to_be_bytes());
                out.push(exchange.len() as u8);
                out.extend_from_slice(exchange);
                out.push(routing_key.len() as u8);
                out.extend_from_slice(routing_key);
                out.extend_from_slice(&(properties.len() as u32).to_be_bytes());
                out.extend_from_slice(properties);
                out.extend_from_slice(body);
            }
            Self::Remove {
                queue,
                segment,
                offset,
            } => {
                out.push(KIND_REMOVE);
                out.extend_from_slice(&queue.0.to_be_bytes());
                out.extend_from_slice(&segment.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Self::Purge { queue } => {
                out.push(KIND_PURGE);
                out.extend_from_slice(&queue.0.to_be_bytes());
            }
            Self::ExchangeDeclare {
                vhost,
                name,
                kind,
                flags,
                arguments,
            } => {
                out.push(KIND_EXCHANGE_DECLARE);
                out.extend_from_slice(&0u64.to_be_bytes());
                put_shortstr(out, vhost);
                put_shortstr(out, name);
                put_shortstr(out, kind);
                out.push(flags);
                put_table(out, arguments);
            }
            Self::ExchangeDelete { vhost, name } => {
                out.push(KIND_EXCHANGE_DELETE);
                out.extend_from_slice(&0u64.to_be_bytes());
                put_shortstr(out, vhost);
                put_shortstr(out, name);
            }
            Self::QueueDeclare {
                queue,
                vhost,
                name,
                flags,
                arguments,
            } => {
                out.push(KIND_QUEUE_DECLARE);
                out.extend_from_slice(&queue.0.to_be_bytes());
                put_shortstr(out, vhost);
                put_shortstr(out, name);
                out.push(flags);
                put_table(out, arguments);
            }
            Self::QueueDelete { queue } => {
                out.push(KIND_QUEUE_DELETE);
                out.extend_from_slice(&queue.0.to_be_bytes());
            }
            Self::Bind(b) | Self::Unbind(b) => {
                out.push(if matches!(self, Self::Bind(_)) {
                    KIND_BIND
                } else {
                    KIND_UNBIND
                });
                out.extend_from_slice(&0u64.to_be_bytes());
                put_shortstr(out, b.vhost);
                put_shortstr(out, b.source);
                out.push(u8::from(b.to_exchange));
                put_shortstr(out, b.destination);
                put_shortstr(out, b.routing_key);
                put_table(out, b.arguments);
            }
        }
        let payload_len = (out.len() - start - RECORD_HEADER_LEN) as u32;
        let len_bytes = payload_len.to_be_bytes();
        let crc = checksum(len_bytes, &out[start + RECORD_HEADER_LEN..]);
        out[start..start + 4].copy_from_slice(&len_bytes);
        out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }

    /// Decodes a payload (field 3 onwards) whose checksum has been verified.
    pub(crate) fn decode(payload: &'a [u8]) -> Result<Self, Malformed> {
        let (&kind, rest) = payload.split_first().ok_or(Malformed("empty record"))?;
        let (queue, rest) = take_u64(rest).ok_or(Malformed("record too short for queue id"))?;
        let queue = QueueId(queue);
        match kind {
            KIND_ENQUEUE => {
                let (exchange, rest) =
                    take_shortstr(rest).ok_or(Malformed("enqueue too short for exchange"))?;
                let (routing_key, rest) =
                    take_shortstr(rest).ok_or(Malformed("enqueue too short for routing key"))?;
                let (props_len, rest) =
                    take_u32(rest).ok_or(Malformed("enqueue too short for properties length"))?;
                if props_len as usize > rest.len() {
                    return Err(Malformed("properties length exceeds the record"));
                }
                let (properties, body) = rest.split_at(props_len as usize);
                Ok(Self::Enqueue {
                    queue,
                    exchange,
                    routing_key,
                    properties,
                    body,
                })
            }
            KIND_REMOVE => {
                let (segment, rest) = take_u32(rest).ok_or(Malformed("remove too short"))?;
                let (offset, rest) = take_u32(rest).ok_or(Malformed("remove too short"))?;
                if !rest.is_empty() {
                    return Err(Malformed("trailing bytes after remove"));
                }
                Ok(Self::Remove {
                    queue,
                    segment,
                    offset,
                })
            }
            KIND_PURGE if rest.is_empty() => Ok(Self::Purge { queue }),
            KIND_PURGE => Err(Malformed("trailing bytes after purge")),
            KIND_QUEUE_DELETE if rest.is_empty() => Ok(Self::QueueDelete { queue }),
            KIND_QUEUE_DELETE => Err(Malformed("trailing bytes after queue delete")),
            KIND_EXCHANGE_DECLARE..=KIND_UNBIND => {
                let mut r = Fields(rest);
                let vhost = r.shortstr()?;
                let record = match kind {
                    KIND_EXCHANGE_DECLARE => Self::ExchangeDeclare {
                        vhost,
                        name: r.shortstr()?,
                        kind: r.shortstr()?,
                        flags: r.u8()?,
                        arguments: r.table()?,
                    },
                    KIND_EXCHANGE_DELETE => Self::ExchangeDelete {
                        vhost,
                        name: r.shortstr()?,
                    },
                    KIND_QUEUE_DECLARE => Self::QueueDeclare {
                        queue,
                        vhost,
                        name: r.shortstr()?,
                        flags: r.u8()?,
                        arguments: r.table()?,
                    },
                    _ => {
                        let source = r.shortstr()?;
                        let to_exchange = match r.u8()? {
                            0 => false,
                            1 => true,
                            _ => return Err(Malformed("bad binding destination kind")),
                        };
                        let binding = BindingRecord {
                            vhost,
                            source,
                            to_exchange,
                            destination: r.shortstr()?,
                            routing_key: r.shortstr()?,
                            arguments: r.table()?,
                        };
                        if kind == KIND_BIND {
                            Self::Bind(binding)
                        } else {
                            Self::Unbind(binding)
                        }
                    }
                };
                if !r.0.is_empty() {
                    return Err(Malformed("trailing bytes after a topology record"));
                }
                Ok(record)
            }
            _ => Err(Malformed("unknown record kind")),
        }
    }
}

#[cfg(test)]
mod tests;
