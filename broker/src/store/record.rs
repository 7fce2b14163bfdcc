//! `Record`: one entry of the segment log (an enqueue, a removal, a purge, or a durable topology
//! change) and its byte layout.

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

/// True when `s` fits a shortstr (at most 255 bytes): the store refuses longer names rather
/// than truncate them.
pub(crate) fn fits_shortstr(s: &str) -> bool {
    s.len() <= 255
}

fn str_len(s: &str) -> u64 {
    1 + s.len() as u64
}

fn table_len(table: &[u8]) -> u64 {
    4 + table.len() as u64
}

fn put_shortstr(out: &mut Vec<u8>, s: &str) {
    // Checked by the appender (`fits_shortstr`).
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn put_table(out: &mut Vec<u8>, table: &[u8]) {
    out.extend_from_slice(&(table.len() as u32).to_be_bytes());
    out.extend_from_slice(table);
}

/// A cursor over a topology record's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(Malformed("topology record too short"))?;
        self.0 = rest;
        Ok(b)
    }

    fn shortstr(&mut self) -> Result<&'a str, Malformed> {
        let (s, rest) = take_shortstr(self.0).ok_or(Malformed("topology record too short"))?;
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| Malformed("name is not UTF-8"))
    }

    fn table(&mut self) -> Result<&'a [u8], Malformed> {
        let (len, rest) = take_u32(self.0).ok_or(Malformed("topology record too short"))?;
        if len as usize > rest.len() {
            return Err(Malformed("table length exceeds the record"));
        }
        let (table, rest) = rest.split_at(len as usize);
        self.0 = rest;
        Ok(table)
    }
}

/// The record checksum: CRC-32 over the length field, then the payload.
pub(crate) fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

fn take_shortstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    (usize::from(len) <= rest.len()).then(|| rest.split_at(usize::from(len)))
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encode(record: Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        record.encode_into(&mut out);
        assert_eq!(out.len() as u64, record.encoded_len());
        out
    }

    fn decode(bytes: &[u8]) -> Record<'_> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        assert_eq!(len as usize, bytes.len() - RECORD_HEADER_LEN);
        assert_eq!(crc, checksum(len.to_be_bytes(), &bytes[8..]));
        Record::decode(&bytes[8..]).unwrap()
    }

    // CRCs below were computed independently with Python's `zlib.crc32` over the same bytes.
    #[test]
    fn enqueue_byte_layout() {
        let record = Record::Enqueue {
            queue: QueueId(7),
            exchange: b"x",
            routing_key: b"rk",
            properties: &[0x10, 0x00, 0x02],
            body: b"hi",
        };
        let bytes = encode(record);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 23,                    // length: 1 + 8 + (1 + 1) + (1 + 2) + 4 + 3 + 2
            0x36, 0x4b, 0x32, 0x93,         // crc32
            1,                              // kind: enqueue
            0, 0, 0, 0, 0, 0, 0, 7,         // queue id
            1, b'x',                        // exchange
            2, b'r', b'k',                  // routing key
            0, 0, 0, 3,                     // properties length
            0x10, 0x00, 0x02,               // properties (flags: delivery-mode; mode 2)
            b'h', b'i',                     // body
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), record);
    }

    #[test]
    fn remove_byte_layout() {
        let record = Record::Remove {
            queue: QueueId(1),
            segment: 2,
            offset: 0x0102_0304,
        };
        let bytes = encode(record);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 17,                    // length: 1 + 8 + 4 + 4
            0xae, 0x0a, 0xdc, 0x47,         // crc32
            2,                              // kind: remove
            0, 0, 0, 0, 0, 0, 0, 1,         // queue id
            0, 0, 0, 2,                     // segment
            1, 2, 3, 4,                     // offset
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), record);
    }

    #[test]
    fn purge_byte_layout() {
        let record = Record::Purge { queue: QueueId(3) };
        let bytes = encode(record);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 9,                     // length: 1 + 8
            0x53, 0xe5, 0x00, 0x37,         // crc32
            3,                              // kind: purge
            0, 0, 0, 0, 0, 0, 0, 3,         // queue id
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), record);
    }

    #[test]
    fn exchange_records_byte_layout() {
        let declare = Record::ExchangeDeclare {
            vhost: "/",
            name: "x",
            kind: "topic",
            flags: 2,
            arguments: &[0, 0, 0, 0],
        };
        let bytes = encode(declare);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 28,                    // length
            0x30, 0x1d, 0x65, 0x78,         // crc32
            4,                              // kind: exchange declare
            0, 0, 0, 0, 0, 0, 0, 0,         // no queue
            1, b'/',                        // vhost
            1, b'x',                        // name
            5, b't', b'o', b'p', b'i', b'c', // type
            2,                              // flags: internal
            0, 0, 0, 4, 0, 0, 0, 0,         // arguments: an empty field table
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), declare);

        let delete = Record::ExchangeDelete {
            vhost: "/",
            name: "x",
        };
        let bytes = encode(delete);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 13,
            0xaf, 0x52, 0x9c, 0x02,
            5,                              // kind: exchange delete
            0, 0, 0, 0, 0, 0, 0, 0,
            1, b'/',
            1, b'x',
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), delete);
    }

    #[test]
    fn queue_records_byte_layout() {
        let declare = Record::QueueDeclare {
            queue: QueueId(5),
            vhost: "/",
            name: "q",
            flags: 1,
            arguments: &[],
        };
        let bytes = encode(declare);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 18,
            0x4b, 0xce, 0x63, 0x03,
            6,                              // kind: queue declare
            0, 0, 0, 0, 0, 0, 0, 5,         // its id
            1, b'/',
            1, b'q',
            1,                              // flags: auto-delete
            0, 0, 0, 0,                     // no arguments
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), declare);

        let delete = Record::QueueDelete { queue: QueueId(5) };
        let bytes = encode(delete);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 9,
            0xe7, 0x6a, 0xf4, 0x0e,
            7,                              // kind: queue delete
            0, 0, 0, 0, 0, 0, 0, 5,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), delete);
    }

    #[test]
    fn binding_records_byte_layout() {
        let bind = Record::Bind(BindingRecord {
            vhost: "/",
            source: "x",
            to_exchange: false,
            destination: "q",
            routing_key: "k",
            arguments: &[],
        });
        let bytes = encode(bind);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 22,
            0xca, 0x3f, 0xa5, 0x5c,
            8,                              // kind: bind
            0, 0, 0, 0, 0, 0, 0, 0,
            1, b'/',                        // vhost
            1, b'x',                        // source
            0,                              // to a queue
            1, b'q',                        // destination
            1, b'k',                        // routing key
            0, 0, 0, 0,                     // no arguments
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), bind);

        let unbind = Record::Unbind(BindingRecord {
            vhost: "/",
            source: "x",
            to_exchange: true,
            destination: "y",
            routing_key: "",
            arguments: &[],
        });
        let bytes = encode(unbind);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 21,
            0xdd, 0x11, 0x53, 0x48,
            9,                              // kind: unbind
            0, 0, 0, 0, 0, 0, 0, 0,
            1, b'/',
            1, b'x',
            1,                              // to an exchange
            1, b'y',
            0,                              // empty routing key
            0, 0, 0, 0,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), unbind);
        assert!(unbind.is_topology() && !Record::Purge { queue: QueueId(1) }.is_topology());
    }

    #[test]
    fn malformed_topology_records_are_rejected() {
        // A bind whose destination kind is neither 0 nor 1.
        let mut bytes = encode(Record::Bind(BindingRecord {
            vhost: "/",
            source: "x",
            to_exchange: false,
            destination: "q",
            routing_key: "k",
            arguments: &[],
        }));
        bytes[RECORD_HEADER_LEN + 9 + 4] = 7;
        assert_eq!(
            Record::decode(&bytes[RECORD_HEADER_LEN..]),
            Err(Malformed("bad binding destination kind"))
        );
        // Names must be UTF-8.
        let mut bytes = encode(Record::ExchangeDelete {
            vhost: "/",
            name: "x",
        });
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert_eq!(
            Record::decode(&bytes[RECORD_HEADER_LEN..]),
            Err(Malformed("name is not UTF-8"))
        );
        // Cut short, or with bytes left over.
        assert_eq!(
            Record::decode(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'/', 3, b'x']),
            Err(Malformed("topology record too short"))
        );
        assert_eq!(
            Record::decode(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'/', 1, b'x', 0]),
            Err(Malformed("trailing bytes after a topology record"))
        );
        assert_eq!(
            Record::decode(&[7, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(Malformed("trailing bytes after queue delete"))
        );
    }

    #[test]
    fn empty_properties_and_body_round_trip() {
        let record = Record::Enqueue {
            queue: QueueId(u64::MAX),
            exchange: b"",
            routing_key: &[b'k'; 255],
            properties: &[],
            body: &[],
        };
        assert_eq!(decode(&encode(record)), record);
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        assert_eq!(Record::decode(&[]), Err(Malformed("empty record")));
        assert_eq!(
            Record::decode(&[10, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(Malformed("unknown record kind"))
        );
        assert_eq!(
            Record::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 5, 1]),
            Err(Malformed("properties length exceeds the record"))
        );
        assert_eq!(
            Record::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 3, b'x']),
            Err(Malformed("enqueue too short for exchange"))
        );
        assert_eq!(
            Record::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(Malformed("trailing bytes after purge"))
        );
    }
}
