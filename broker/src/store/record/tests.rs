//! The unit tests of `store/record.rs`.

#![allow(clippy::unwrap_used)]

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

/// Checks that `record` encodes to `expected` (header included) and decodes back to itself.
fn assert_layout(record: Record<'_>, expected: &[u8]) {
    let bytes = encode(record);
    assert_eq!(bytes, expected, "the encoding of {record:?}");
    assert_eq!(decode(&bytes), record);
}

/// A binding from exchange `x` in vhost `/`, without arguments.
fn binding_from_x(
    to_exchange: bool,
    destination: &'static str,
    routing_key: &'static str,
) -> BindingRecord<'static> {
    BindingRecord {
        vhost: "/",
        source: "x",
        to_exchange,
        destination,
        routing_key,
        arguments: &[],
    }
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
    assert_layout(record, expected);
}

#[test]
fn remove_byte_layout() {
    let record = Record::Remove {
        queue: QueueId(1),
        segment: 2,
        offset: 0x0102_0304,
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 17,                    // length: 1 + 8 + 4 + 4
        0xae, 0x0a, 0xdc, 0x47,         // crc32
        2,                              // kind: remove
        0, 0, 0, 0, 0, 0, 0, 1,         // queue id
        0, 0, 0, 2,                     // segment
        1, 2, 3, 4,                     // offset
    ];
    assert_layout(record, expected);
}

#[test]
fn purge_byte_layout() {
    let record = Record::Purge { queue: QueueId(3) };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 9,                     // length: 1 + 8
        0x53, 0xe5, 0x00, 0x37,         // crc32
        3,                              // kind: purge
        0, 0, 0, 0, 0, 0, 0, 3,         // queue id
    ];
    assert_layout(record, expected);
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
    assert_layout(declare, expected);

    let delete = Record::ExchangeDelete {
        vhost: "/",
        name: "x",
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 13,
        0xaf, 0x52, 0x9c, 0x02,
        5,                              // kind: exchange delete
        0, 0, 0, 0, 0, 0, 0, 0,
        1, b'/',
        1, b'x',
    ];
    assert_layout(delete, expected);
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
    assert_layout(declare, expected);

    let delete = Record::QueueDelete { queue: QueueId(5) };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 9,
        0xe7, 0x6a, 0xf4, 0x0e,
        7,                              // kind: queue delete
        0, 0, 0, 0, 0, 0, 0, 5,
    ];
    assert_layout(delete, expected);
}

#[test]
fn binding_records_byte_layout() {
    let bind = Record::Bind(binding_from_x(false, "q", "k"));
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
    assert_layout(bind, expected);

    let unbind = Record::Unbind(binding_from_x(true, "y", ""));
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
    assert_layout(unbind, expected);
    assert!(unbind.is_topology() && !Record::Purge { queue: QueueId(1) }.is_topology());
}

#[test]
fn malformed_topology_records_are_rejected() {
    // A bind whose destination kind is neither 0 nor 1.
    let mut bytes = encode(Record::Bind(binding_from_x(false, "q", "k")));
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
