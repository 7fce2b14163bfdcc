//! `amqps://` end to end: a test CA and a server certificate for 127.0.0.1 are made at test
//! time with rcgen, the broker serves TLS with them, and lapin (rustls) connects trusting only
//! that CA, then publishes and consumes over the encrypted connection. A client that does not
//! trust the CA is refused by its own TLS handshake; the broker keeps serving.

mod amqp;
mod common;

use amqp::*;
use lapin::options::QueueDeclareOptions;
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus::broker::Broker;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Lepus test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    leaf.distinguished_name
        .push(DnType::CommonName, "lepus test broker");
    let cert = leaf
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("sign the server certificate");
    TestPki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

async fn connect_tls(url: &str, ca_pem: Option<String>) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime().expect("tokio runtime for lapin");
    within(
        "the amqps connection",
        Connection::connect_with_config(
            url,
            ConnectionProperties::default(),
            OwnedTLSConfig {
                identity: None,
                cert_chain: ca_pem,
            },
            runtime,
        ),
    )
    .await
}

#[tokio::test]
async fn lapin_over_amqps_with_a_test_ca() {
    let pki = make_pki();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, &pki.cert_pem).expect("write cert");
    std::fs::write(&key, &pki.key_pem).expect("write key");

    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .tls("127.0.0.1:0", &cert, &key)
        .start()
        .await
        .expect("broker with TLS starts");
    let tls_addr = broker.tls_addr().expect("TLS listener bound");
    let url = format!("amqps://guest:guest@{tls_addr}/%2f");

    let conn = connect_tls(&url, Some(pki.ca_pem.clone()))
        .await
        .expect("lapin connects over TLS trusting the test CA");
    let ch = confirm_channel(&conn).await;
    let q = declare_server_named(&ch).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    publish_confirmed(
        &ch,
        "",
        q.name().as_str(),
        &body,
        BasicProperties::default(),
    )
    .await;
    let got = get_body(&ch, q.name().as_str())
        .await
        .expect("message back");
    assert!(got == body, "a 200 kB body round-trips over TLS");

    // A client without the test CA refuses the broker's certificate (and so never logs in);
    // the TLS connection above and plain AMQP keep working.
    assert!(
        connect_tls(&url, None).await.is_err(),
        "untrusted CA is refused"
    );
    let plain = connect_url(&broker.amqp_url()).await;
    plain.close(200, "bye".into()).await.expect("close plain");
    ch.queue_declare(
        q.name().as_str().into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the TLS connection still works");
    conn.close(200, "bye".into()).await.expect("close TLS");
    broker.shutdown().await;
}
