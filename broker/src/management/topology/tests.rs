//! The unit tests of `management/topology.rs`.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::message::Message;
use crate::persistence::{Durability, Persistence};

/// A store whose topology commits wait until the test releases them (an fsync that takes
/// as long as the test likes); messages are durable at once.
#[derive(Debug, Default)]
struct HeldCommits {
    /// The senders of the commits handed out and not yet released.
    held: Mutex<Vec<oneshot::Sender<Result<(), StoreError>>>>,
}

impl HeldCommits {
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn release(&self) {
        for tx in self.held.lock().unwrap().drain(..) {
            let _ = tx.send(Ok(()));
        }
    }
}

impl Persistence for HeldCommits {
    fn enqueue(&self, _: &str, _: &str, _: u64, _: &Arc<Message>) -> Durability {
        Durability::Durable
    }

    fn remove(&self, _: &str, _: &str, _: u64) {}

    fn record_topology(
        &self,
        _: &str,
        _: TopologyChange<'_>,
    ) -> Result<Option<Commit>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.held.lock().unwrap().push(tx);
        Ok(Some(Commit(rx)))
    }
}

/// A broker on `store` running on a current-thread runtime of its own (one thread for
/// every connection and the management API, the worst case of a worker shared with the
/// API), until `stop` fires. Returns its AMQP URL, management address and admin handle.
fn broker_on_one_thread(
    store: Arc<HeldCommits>,
    stop: oneshot::Receiver<()>,
) -> (
    String,
    std::net::SocketAddr,
    crate::Admin,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let handle = crate::Broker::builder()
                .listen("127.0.0.1:0")
                .management_listen("127.0.0.1:0")
                .store(store)
                .start()
                .await
                .unwrap();
            tx.send((
                handle.amqp_url(),
                handle.management_addr().unwrap(),
                handle.admin(),
            ))
            .unwrap();
            let _ = stop.await;
            handle.shutdown().await;
        });
    });
    let (url, management, admin) = rx.recv().unwrap();
    (url, management, admin, thread)
}

/// One HTTP/1.1 request as guest; the status code of the answer.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Starts `method path` and returns once the broker holds its store commit, with the
/// request still waiting for its answer.
async fn start_held(
    store: &HeldCommits,
    addr: std::net::SocketAddr,
    method: &'static str,
    path: &'static str,
    body: &'static str,
) -> tokio::task::JoinHandle<u16> {
    let before = store.held();
    let request = tokio::spawn(http(addr, method, path, body));
    tokio::time::timeout(Duration::from_secs(60), async {
        while store.held() == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the write never reached the store");
    request
}

/// A publish and a `basic.get` of it on `ch` complete (generous bound: the broker's one
/// thread is free, or it never answers).
async fn round_trip(ch: &lapin::Channel, body: &[u8]) {
    tokio::time::timeout(Duration::from_secs(30), async {
        ch.basic_publish(
            "".into(),
            "probe".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let got = ch
            .basic_get("probe".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the probe message");
        assert_eq!(got.delivery.data, body);
    })
    .await
    .expect("an AMQP round trip stalled while a management write waited for its commit");
}

/// Management writes that wait for the store's commit (durable declares, binds, deletes,
/// a definitions import, a vhost's deletion) do not park the runtime thread while they wait: an AMQP client of
/// the same broker, on the same single thread, still gets its publish and get answered.
/// Each answer still goes out only once the commit is released (durable semantics).
#[tokio::test]
async fn a_held_back_commit_does_not_stall_amqp() {
    let store = Arc::new(HeldCommits::default());
    let (stop_tx, stop_rx) = oneshot::channel();
    let (url, api, admin, thread) = broker_on_one_thread(store.clone(), stop_rx);
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "probe".into(),
        QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();

    let writes: [(&str, &str, &str, u16); 6] = [
        ("PUT", "/api/queues/%2F/held", r#"{"durable":true}"#, 201),
        (
            "POST",
            "/api/definitions",
            r#"{"queues":[{"name":"imported","vhost":"/","durable":true}]}"#,
            204,
        ),
        (
            "PUT",
            "/api/exchanges/%2F/x",
            r#"{"type":"fanout","durable":true}"#,
            201,
        ),
        ("POST", "/api/bindings/%2F/e/x/q/held", "{}", 201),
        ("DELETE", "/api/exchanges/%2F/x", "", 204),
        ("PUT", "/api/queues/v/doomed", r#"{"durable":true}"#, 201),
    ];
    admin.add_vhost("v").unwrap();
    admin
        .set_permissions("v", "guest", ".*", ".*", ".*")
        .unwrap();
    for (i, (method, path, body, status)) in writes.into_iter().enumerate() {
        let request = start_held(&store, api, method, path, body).await;
        round_trip(&ch, format!("during {method} {path}").as_bytes()).await;
        assert!(
            !request.is_finished(),
            "{method} {path} answered before its commit"
        );
        store.release();
        assert_eq!(request.await.unwrap(), status, "write {i}: {method} {path}");
    }
    // A vhost's deletion (the synchronous admin path) waits for the commit of its durable
    // queue's deletion.
    let request = start_held(&store, api, "DELETE", "/api/vhosts/v", "").await;
    round_trip(&ch, b"during DELETE /api/vhosts/v").await;
    assert!(
        !request.is_finished(),
        "the vhost deletion answered before its commit"
    );
    store.release();
    assert_eq!(request.await.unwrap(), 204);

    conn.close(200, "bye".into()).await.unwrap();
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
}
