//! The unit tests of `frame/nesting.rs`.

#![allow(clippy::unwrap_used)]

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, connection, exchange, queue, AMQPClass};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

use super::*;

/// A value nested `depth` levels deep (tables and arrays alternating when `mixed`), with a
/// few scalars of every width at each level so the scan must skip them right.
fn nested(depth: usize, mixed: bool) -> FieldTable {
    let scalars = |t: &mut FieldTable| {
        t.insert("b".into(), AMQPValue::ShortShortInt(-1));
        t.insert("s".into(), AMQPValue::ShortInt(2));
        t.insert("d".into(), AMQPValue::Double(0.5));
        t.insert(
            "D".into(),
            AMQPValue::DecimalValue(amq_protocol::types::DecimalValue { scale: 2, value: 7 }),
        );
        t.insert("S".into(), AMQPValue::LongString("F\0\0\0\x05".into()));
        t.insert("x".into(), AMQPValue::ByteArray(vec![b'A'; 3].into()));
        t.insert("V".into(), AMQPValue::Void);
    };
    let mut value = FieldTable::default();
    scalars(&mut value);
    for level in 1..depth {
        let mut outer = FieldTable::default();
        scalars(&mut outer);
        if mixed && level % 2 == 1 && level + 1 < depth {
            // An array holding the table: two levels at once.
            let mut array = FieldArray::default();
            array.push(AMQPValue::Timestamp(1));
            array.push(AMQPValue::FieldTable(value));
            outer.insert("a".into(), AMQPValue::FieldArray(array));
            value = outer;
            continue;
        }
        outer.insert("t".into(), AMQPValue::FieldTable(value));
        value = outer;
    }
    value
}

/// The nesting depth of a decoded value, computed recursively (test input is shallow
/// enough for that).
fn depth_of(table: &FieldTable) -> usize {
    fn value(v: &AMQPValue) -> usize {
        match v {
            AMQPValue::FieldTable(t) => depth_of(t),
            AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + table.inner().values().map(value).max().unwrap_or(0)
}

fn table_bytes(table: &FieldTable) -> Vec<u8> {
    gen_field_table(table)(WriteContext::from(Vec::new()))
        .unwrap()
        .write
}

/// A chain of tables `{"a": {"a": ...}}` built byte by byte (no recursion to build it).
fn chain(depth: usize) -> Vec<u8> {
    let mut inner = vec![0, 0, 0, 0];
    for _ in 1..depth {
        let mut t = ((inner.len() + 3) as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&[1, b'a', b'F']);
        t.extend_from_slice(&inner);
        inner = t;
    }
    inner
}

#[test]
fn the_scan_agrees_with_the_decoded_depth() {
    for mixed in [false, true] {
        for depth in 1..=MAX_NESTING_DEPTH + 3 {
            let table = nested(depth, mixed);
            let real = depth_of(&table);
            let bytes = table_bytes(&table);
            let verdict = check_table(&bytes);
            assert_eq!(
                verdict.is_ok(),
                real <= MAX_NESTING_DEPTH,
                "depth {real} (mixed {mixed})"
            );
        }
    }
    assert_eq!(check_table(&chain(MAX_NESTING_DEPTH)), Ok(()));
    assert_eq!(check_table(&chain(MAX_NESTING_DEPTH + 1)), Err(TooDeep));
    assert_eq!(check_table(&chain(100_000)), Err(TooDeep));
}

#[test]
fn malformed_input_is_left_to_the_parser_which_refuses_it() {
    // Every prefix of a too-deep chain, and every single-byte corruption of a short one:
    // whenever the scan lets it through, the parser either refuses it or decodes a value
    // within the bound.
    let deep = chain(MAX_NESTING_DEPTH + 1);
    for cut in 0..deep.len() {
        let part = &deep[..cut];
        if check_table(part).is_ok() {
            assert!(parse_field_table(part).is_err(), "cut {cut}");
        }
    }
    let table = nested(MAX_NESTING_DEPTH + 1, true);
    let bytes = table_bytes(&table);
    for at in (0..bytes.len()).step_by(7) {
        for value in [0u8, b'F', b'A', 0xff] {
            let mut mutated = bytes.clone();
            mutated[at] = value;
            if check_table(&mutated).is_ok() {
                if let Ok((_, t)) = parse_field_table(&mutated[..]) {
                    assert!(depth_of(&t) <= MAX_NESTING_DEPTH, "byte {at} = {value}");
                }
            }
        }
    }
}

fn frame_payload(frame: &AMQPFrame) -> Vec<u8> {
    let bytes = gen_frame(frame)(WriteContext::from(Vec::new()))
        .unwrap()
        .write;
    bytes[7..bytes.len() - 1].to_vec()
}

#[test]
fn every_method_with_a_table_and_the_content_header_are_scanned() {
    let mut outcomes = (0, 0);
    for depth in 1..=MAX_NESTING_DEPTH + 2 {
        let t = || nested(depth, true);
        let real = depth_of(&t());
        if !(MAX_NESTING_DEPTH - 1..=MAX_NESTING_DEPTH + 2).contains(&real) {
            continue;
        }
        if real <= MAX_NESTING_DEPTH {
            outcomes.0 += 1;
        } else {
            outcomes.1 += 1;
        }
        let methods = vec![
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: t(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            })),
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: t(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "x".into(),
                kind: "topic".into(),
                arguments: t(),
                ..Default::default()
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                destination: "d".into(),
                source: "s".into(),
                routing_key: "k".into(),
                nowait: true,
                arguments: t(),
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                destination: "d".into(),
                source: "s".into(),
                routing_key: "k".into(),
                nowait: false,
                arguments: t(),
            })),
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                durable: true,
                arguments: t(),
                ..Default::default()
            })),
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: "q".into(),
                exchange: "amq.topic".into(),
                routing_key: "a.#".into(),
                nowait: false,
                arguments: t(),
            })),
            AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                queue: "q".into(),
                exchange: "amq.topic".into(),
                routing_key: "a.#".into(),
                arguments: t(),
            })),
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q".into(),
                consumer_tag: "c".into(),
                no_ack: true,
                arguments: t(),
                ..Default::default()
            })),
        ];
        for method in methods {
            let payload = frame_payload(&AMQPFrame::Method(1, method.clone()));
            assert_eq!(
                check_method(&payload).is_ok(),
                real <= MAX_NESTING_DEPTH,
                "{:?} at depth {real}",
                (method.get_amqp_class_id(), method.get_amqp_method_id())
            );
        }
        for (content_type, encoding) in [(None, None), (Some("a/b"), Some("gzip"))] {
            let mut properties = basic::AMQPProperties::default()
                .with_headers(t())
                .with_priority(3);
            if let (Some(ct), Some(enc)) = (content_type, encoding) {
                properties = properties
                    .with_content_type(ct.into())
                    .with_content_encoding(enc.into());
            }
            let header = AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: 1,
                    properties,
                },
            );
            let payload = frame_payload(&header);
            assert_eq!(check_header(&payload).is_ok(), real <= MAX_NESTING_DEPTH);
        }
    }
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
    // Methods without tables pass untouched, whatever their bytes.
    assert_eq!(check_method(&[0, 60, 0, 40, b'F', 0xff]), Ok(()));
    assert_eq!(check_method(&[]), Ok(()));
    assert_eq!(check_header(&[0, 60]), Ok(()));
}

#[test]
fn a_table_at_the_bound_is_decoded_and_used_in_a_fraction_of_a_worker_stack() {
    // Decoding (the recursive parser), cloning, comparing, formatting, re-encoding and
    // dropping a maximal table, on a thread with half a tokio worker's 2 MiB stack.
    let table = (1..=MAX_NESTING_DEPTH)
        .map(|d| nested(d, true))
        .find(|t| depth_of(t) == MAX_NESTING_DEPTH)
        .unwrap_or_else(|| nested(MAX_NESTING_DEPTH, false));
    assert_eq!(depth_of(&table), MAX_NESTING_DEPTH);
    let header = AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: 0,
            properties: basic::AMQPProperties::default().with_headers(table),
        },
    );
    let bytes = gen_frame(&header)(WriteContext::from(Vec::new()))
        .unwrap()
        .write;
    let worked = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            let (_, decoded) = parse_frame(&bytes[..]).unwrap();
            let copy = decoded.clone();
            assert_eq!(copy, decoded);
            let text = format!("{copy:?}");
            let again = gen_frame(&copy)(WriteContext::from(Vec::new()))
                .unwrap()
                .write;
            assert_eq!(again, bytes);
            drop(copy);
            drop(decoded);
            text.len()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(worked > 0);
}

#[test]
fn amqplain_entries_are_scanned_without_a_length_prefix() {
    let deep = chain(MAX_NESTING_DEPTH + 1);
    assert_eq!(check_table_entries(&deep[4..]), Err(TooDeep));
    let ok = chain(MAX_NESTING_DEPTH);
    assert_eq!(check_table_entries(&ok[4..]), Ok(()));
}
