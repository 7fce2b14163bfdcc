//! `Record`: one entry of the segment log (an enqueue, a removal or a purge) and its byte layout.

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

/// One entry of the segment log. All integers are big-endian (network order, as in AMQP).
///
/// Every record starts with the same header:
///
/// 1. Length as u32: the number of bytes from field 3 to the end of the record [4 bytes].
/// 2. CRC-32 (IEEE, as zlib's `crc32`) as u32, computed over field 1 followed by field 3 to the
///    end of the record [4 bytes].
/// 3. Kind as u8: 1 = enqueue, 2 = remove, 3 = purge [1 byte].
/// 4. Queue id as u64 (see [`super::QueueId`]) [8 bytes].
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
            Self::Purge { .. } => 1 + 8,
        };
        RECORD_HEADER_LEN as u64 + payload
    }

    /// Appends the encoded record to `out` (no allocation beyond `out` growing). The caller
    /// has checked `encoded_len() <= MAX_RECORD_LEN`, so every length fits a u32, and that the
    /// exchange and routing key are at most 255 bytes, so their lengths fit a u8.
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
            _ => Err(Malformed("unknown record kind")),
        }
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
            Record::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 1]),
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
