//! Checks the harness itself: a test broker starts and accepts an AMQP client.

mod common;

#[tokio::test]
async fn harness_broker_accepts_a_lapin_connection() {
    let broker = common::broker().await;
    let conn = lapin::Connection::connect(broker.url(), lapin::ConnectionProperties::default())
        .await
        .expect("lapin connects to the test broker");
    assert!(conn.status().connected());
    conn.close(200, "bye".into()).await.expect("clean close");
    broker.stop().await;
}
