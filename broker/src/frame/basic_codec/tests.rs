//! The unit tests of `frame/basic_codec.rs`.

#![allow(clippy::unwrap_used)]

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::types::{AMQPValue, FieldTable};

use super::*;

fn frame_bytes(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .unwrap()
        .write
}

/// What amq-protocol makes of a whole frame, or `None` if it refuses it.
fn reference(frame: &[u8]) -> Option<AMQPFrame> {
    parse_frame(frame).ok().map(|(_, f)| f)
}

/// Our decoder on a whole frame's payload.
fn ours(frame: &[u8]) -> Option<AMQPFrame> {
    let (kind, channel) = (frame[0], u16::from_be_bytes([frame[1], frame[2]]));
    let payload = &frame[7..frame.len() - 1];
    match kind {
        super::super::FRAME_METHOD => decode_method(payload).map(|m| AMQPFrame::Method(channel, m)),
        super::super::FRAME_HEADER => decode_header(payload).map(|h| AMQPFrame::Header(channel, h)),
        _ => None,
    }
}

/// A headers table with every value type the hot path handles.
fn plain_table() -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(
        "x-lepus-deadline".into(),
        AMQPValue::LongLongInt(-1_764_000_000_000),
    );
    table.insert("retries".into(), AMQPValue::LongInt(-3));
    table.insert("ok".into(), AMQPValue::Boolean(true));
    table.insert("no".into(), AMQPValue::Boolean(false));
    table.insert(
        "blob".into(),
        AMQPValue::LongString(vec![0xff, 0, b'a'].into()),
    );
    table
}

/// Tables with a value type the hot path leaves to amq-protocol, one per type.
fn other_tables() -> Vec<FieldTable> {
    [
        AMQPValue::ShortShortInt(-1),
        AMQPValue::Double(0.5),
        AMQPValue::ShortInt(1),
        AMQPValue::Timestamp(7),
        AMQPValue::FieldTable(FieldTable::default()),
        AMQPValue::Void,
    ]
    .into_iter()
    .map(|value| {
        let mut table = plain_table();
        table.insert("other".into(), value);
        table
    })
    .collect()
}

fn samples() -> Vec<AMQPFrame> {
    let all = basic::AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("42".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
        .with_cluster_id("c".into());
    let mut frames = vec![
        AMQPFrame::Header(
            4,
            AMQPContentHeader {
                class_id: 60,
                body_size: 16,
                properties: basic::AMQPProperties::default()
                    .with_content_type("application/msgpack".into())
                    .with_headers(plain_table())
                    .with_expiration("30000".into()),
            },
        ),
        AMQPFrame::Header(
            5,
            AMQPContentHeader {
                class_id: 60,
                body_size: 0,
                properties: basic::AMQPProperties::default().with_headers(FieldTable::default()),
            },
        ),
        AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 0x0102_0304_0506_0708,
                multiple: true,
            })),
        ),
        AMQPFrame::Method(
            9,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            })),
        ),
        AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 5,
                properties: basic::AMQPProperties::default(),
            },
        ),
        AMQPFrame::Header(
            2,
            AMQPContentHeader {
                class_id: 60,
                body_size: u64::MAX,
                properties: all,
            },
        ),
    ];
    for (mandatory, immediate) in [(false, false), (true, false), (false, true), (true, true)] {
        frames.push(AMQPFrame::Method(
            3,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "amq.direct".into(),
                routing_key: "rpc.é".into(),
                mandatory,
                immediate,
            })),
        ));
    }
    frames
}

#[test]
fn decoders_agree_with_amq_protocol_on_valid_frames() {
    for frame in samples() {
        let bytes = frame_bytes(&frame);
        assert_eq!(ours(&bytes), Some(frame.clone()), "{frame:?}");
        assert_eq!(reference(&bytes), Some(frame));
    }
}

#[test]
fn decoders_never_disagree_with_amq_protocol_on_mutated_frames() {
    // Every byte of every payload set to a handful of values, and every payload cut
    // short or extended: whenever our decoder accepts, amq-protocol decodes the same.
    let mut accepted = 0;
    for frame in samples() {
        let bytes = frame_bytes(&frame);
        for at in 7..bytes.len() - 1 {
            for value in [0u8, 1, 2, 3, 0x7f, 0x80, 0xC3, 0xff] {
                let mut mutated = bytes.clone();
                mutated[at] = value;
                if let Some(got) = ours(&mutated) {
                    accepted += 1;
                    assert_eq!(Some(got), reference(&mutated), "byte {at} = {value}");
                }
            }
        }
        for cut in 1..bytes.len() - 8 {
            let mut short = bytes[..bytes.len() - 1 - cut].to_vec();
            let size = (short.len() - 7) as u32;
            short[3..7].copy_from_slice(&size.to_be_bytes());
            short.push(0xCE);
            assert_eq!(ours(&short), None, "cut {cut}");
        }
        let mut long = bytes[..bytes.len() - 1].to_vec();
        long.push(0);
        let size = (long.len() - 7) as u32;
        long[3..7].copy_from_slice(&size.to_be_bytes());
        long.push(0xCE);
        assert_eq!(ours(&long), None);
    }
    assert!(accepted > 100, "the mutations exercised the accepting path");
}

#[test]
fn other_header_value_types_and_other_methods_are_left_to_amq_protocol() {
    for table in other_tables() {
        let header = AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 1,
                properties: basic::AMQPProperties::default().with_headers(table),
            },
        );
        let bytes = frame_bytes(&header);
        assert_eq!(ours(&bytes), None, "{header:?}");
        assert_eq!(reference(&bytes), Some(header));
    }
    let qos = AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    );
    assert_eq!(ours(&frame_bytes(&qos)), None);
}

/// The property bytes `gen_properties` writes.
fn reference_properties(p: &basic::AMQPProperties) -> Vec<u8> {
    basic::gen_properties(p)(WriteContext::from(Vec::new()))
        .unwrap()
        .write
}

#[test]
fn properties_are_encoded_byte_for_byte_like_amq_protocol() {
    let mut encoded = 0;
    for frame in samples() {
        if let AMQPFrame::Header(_, header) = frame {
            let mut out = vec![0xAA];
            assert!(encode_properties(&mut out, &header.properties));
            assert_eq!(&out[1..], &reference_properties(&header.properties)[..]);
            encoded += 1;
        }
    }
    assert!(encoded >= 4);
    // Duplicate keys and every flag alone.
    let mut table = plain_table();
    table.insert("retries".into(), AMQPValue::LongInt(9));
    let alone = [
        basic::AMQPProperties::default().with_headers(table),
        basic::AMQPProperties::default().with_delivery_mode(1),
        basic::AMQPProperties::default().with_priority(0),
        basic::AMQPProperties::default().with_timestamp(0),
        basic::AMQPProperties::default().with_cluster_id("".into()),
    ];
    for p in alone {
        let mut out = Vec::new();
        assert!(encode_properties(&mut out, &p));
        assert_eq!(out, reference_properties(&p), "{p:?}");
    }
    // Other value types: refused, nothing written.
    for table in other_tables() {
        let p = basic::AMQPProperties::default().with_headers(table);
        let mut out = vec![1, 2];
        assert!(!encode_properties(&mut out, &p));
        assert_eq!(out, [1, 2]);
    }
}

#[test]
fn deliver_is_encoded_byte_for_byte_like_amq_protocol() {
    for redelivered in [false, true] {
        let deliver = basic::Deliver {
            consumer_tag: "amq.ctag-1".into(),
            delivery_tag: 0x1122_3344_5566_7788,
            redelivered,
            exchange: "".into(),
            routing_key: "amq.rabbitmq.reply-to.abc".into(),
        };
        let mut out = vec![0xAA];
        encode_deliver(&mut out, 7, &deliver);
        let expected = frame_bytes(&AMQPFrame::Method(
            7,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)),
        ));
        assert_eq!(out[0], 0xAA);
        assert_eq!(&out[1..], &expected[..]);
    }
}
