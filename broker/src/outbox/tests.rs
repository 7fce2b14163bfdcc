//! The outbox and its writer task: encoding, batching, order, and the direct write path.

#![allow(clippy::unwrap_used)]

use amq_protocol::protocol::{basic, channel};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn open_ok(ch: u16) -> Outbound {
    Outbound::Method(
        ch,
        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
    )
}

fn delivery(ch: u16, tag: u64, body: &[u8]) -> Outbound {
    Outbound::Content {
        channel: ch,
        method: AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        })),
        message: Arc::new(Message::unaccounted(
            "".into(),
            "q".into(),
            basic::AMQPProperties::default(),
            bytes::Bytes::copy_from_slice(body),
        )),
    }
}

/// What the items encode to, in order.
fn encoded(items: Vec<Outbound>, frame_max: u32) -> Vec<u8> {
    let mut all = Vec::new();
    for item in items {
        let mut one = Vec::new();
        encode_batch(&mut VecDeque::from([item]), &mut one, frame_max);
        all.extend_from_slice(&one);
    }
    all
}

#[tokio::test]
async fn batched_direct_writes_and_writer_writes_keep_send_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (mut client, (server, _)) = (client.unwrap(), accepted.unwrap());
    let (_read, write) = server.into_split();
    let (outbox, run) = outbox(WriteSide::Tcp(write));
    let writer = tokio::spawn(run);
    outbox
        .send(Outbound::Tune {
            frame_max: 4096,
            heartbeat: None,
        })
        .unwrap();
    let big = vec![7u8; 20_000];
    let mut expected = Vec::new();
    // Outside a batch (writer task), inside one (direct write), a body cut into frames,
    // and a batch larger than BATCH_BYTES (a remainder left to the writer).
    outbox.send(open_ok(1)).unwrap();
    expected.push(open_ok(1));
    batch(|| {
        for tag in 1..=3 {
            outbox.send(delivery(1, tag, b"hello")).unwrap();
        }
    });
    expected.extend((1..=3).map(|tag| delivery(1, tag, b"hello")));
    batch(|| {
        outbox.send(delivery(2, 1, &big)).unwrap();
        outbox.send(open_ok(3)).unwrap();
    });
    expected.push(delivery(2, 1, &big));
    expected.push(open_ok(3));
    batch(|| {
        for tag in 4..=40 {
            outbox.send(delivery(1, tag, &big)).unwrap();
        }
    });
    expected.extend((4..=40).map(|tag| delivery(1, tag, &big)));
    outbox.send(open_ok(4)).unwrap();
    expected.push(open_ok(4));
    outbox.send(Outbound::Shutdown).unwrap();
    assert_eq!(
        outbox.send(open_ok(5)),
        Err(Closed),
        "refused after shutdown"
    );
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got, encoded(expected, 4096));
}

#[test]
fn a_panicking_batch_does_not_stay_open() {
    let caught = std::panic::catch_unwind(|| batch(|| panic!("handler bug")));
    assert!(caught.is_err());
    assert!(BATCH.with(|b| b.borrow().is_none()));
    // And a later batch opens and closes normally.
    let outbox = Outbox::detached();
    batch(|| outbox.send(open_ok(1)).unwrap());
    assert!(BATCH.with(|b| b.borrow().is_none()));
}

#[test]
fn a_deliver_item_encodes_like_the_equivalent_deliver_method() {
    let message = Arc::new(Message::unaccounted(
        "amq.fanout".into(),
        "some.key".into(),
        basic::AMQPProperties::default().with_delivery_mode(2),
        bytes::Bytes::from(vec![5u8; 300]),
    ));
    for (redelivered, frame_max) in [(false, 4096), (true, 100), (false, 0)] {
        let shared = Outbound::Deliver {
            channel: 7,
            consumer_tag: Arc::new("ctag-1".into()),
            delivery_tag: 42,
            redelivered,
            message: message.clone(),
        };
        let built = Outbound::Content {
            channel: 7,
            method: AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag-1".into(),
                delivery_tag: 42,
                redelivered,
                exchange: "amq.fanout".into(),
                routing_key: "some.key".into(),
            })),
            message: message.clone(),
        };
        assert_eq!(
            encoded(vec![shared], frame_max),
            encoded(vec![built], frame_max),
            "redelivered {redelivered}, frame_max {frame_max}"
        );
    }
}
