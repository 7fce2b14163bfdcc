//! Divergences the differential tester found, kept as regression tests: each program with the
//! trace RabbitMQ 3.10 gave for it (printed by the tester when it shrank the failure, or by
//! `lepus-difftest expect`). They run against the in-process bundled broker, or against the
//! broker `LEPUS_TEST_AMQP_URL` names (`.ci/run` points it at RabbitMQ, which re-checks the
//! expectations themselves).

/// queue.unbind of a missing binding or queue answers unbind-ok (the bundled broker answered 404; fixed on trust-access, issue 13).
#[tokio::test]
async fn an_unbind_of_what_is_absent_is_ok() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 queue.unbind q0 -> amq.direct key="a"
c0.1 queue.unbind q1 -> amq.direct key="a"
c0.1 queue.bind q0 -> amq.direct key="a"
c0.1 queue.unbind q0 -> amq.direct key="a"
c0.1 queue.unbind q0 -> amq.direct key="a"
"#,
        r#"
#0 c0.1 queue.declare q0
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 queue.unbind q0 -> amq.direct key="a"
  = queue.unbind-ok
  queues: q0=0/0
#2 c0.1 queue.unbind q1 -> amq.direct key="a"
  = queue.unbind-ok
  queues: q0=0/0
#3 c0.1 queue.bind q0 -> amq.direct key="a"
  = queue.bind-ok
  queues: q0=0/0
#4 c0.1 queue.unbind q0 -> amq.direct key="a"
  = queue.unbind-ok
  queues: q0=0/0
#5 c0.1 queue.unbind q0 -> amq.direct key="a"
  = queue.unbind-ok
  queues: q0=0/0
end
  q0 empty after 0
  exchanges: -
"#,
    )
    .await;
}

/// basic.publish: 404 for a missing exchange and 403 for an internal one before the properties; delivery_mode outside 1..2 and a foreign user_id are 406.
#[tokio::test]
async fn a_publish_is_checked_exchange_first_then_its_properties() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 basic.publish amq.x key=q0 props(exp="soon") body=3
c0.1 exchange.declare e0 direct internal
c0.1 basic.publish e0 key=q0 props(dm=0) body=3
c0.1 basic.publish "" key=q0 props(dm=3) body=3
c0.1 basic.publish "" key=q0 props(uid="nobody") body=3
c0.1 basic.publish "" key=q0 props(dm=2 uid="guest") body=3
c0.1 exchange.delete e0
"#,
        r#"
#0 c0.1 queue.declare q0
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 basic.publish amq.x key=q0 props(exp="soon") body=3
  = sent m0
  c0.1 channel.close by broker 404 NOT_FOUND (60,40)
  queues: q0=0/0
#2 c0.1 exchange.declare e0 direct internal
  = exchange.declare-ok
  queues: q0=0/0
#3 c0.1 basic.publish e0 key=q0 props(dm=0) body=3
  = sent m1
  c0.1 channel.close by broker 403 ACCESS_REFUSED (60,40)
  queues: q0=0/0
#4 c0.1 basic.publish "" key=q0 props(dm=3) body=3
  = sent m2
  c0.1 channel.close by broker 406 PRECONDITION_FAILED (60,40)
  queues: q0=0/0
#5 c0.1 basic.publish "" key=q0 props(uid="nobody") body=3
  = sent m3
  c0.1 channel.close by broker 406 PRECONDITION_FAILED (60,40)
  queues: q0=0/0
#6 c0.1 basic.publish "" key=q0 props(dm=2 uid="guest") body=3
  = sent m4
  queues: q0=1/0
#7 c0.1 exchange.delete e0
  = exchange.delete-ok
  queues: q0=1/0
end
  q0 #0 m4+3 ex="" rk=q0 props(dm=2 uid="guest")
  q0 empty after 1
  exchanges: e0=404
"#,
    )
    .await;
}

/// Inside a transaction a publish and an ack are checked when they arrive (406 at once), not at the commit.
#[tokio::test]
async fn a_transaction_checks_publishes_and_acks_when_they_arrive() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 tx.select
c0.1 basic.publish "" key=q0 props(exp="soon") body=3
c0.2 tx.select
c0.2 basic.reject unknown
c0.2 tx.select
c0.2 basic.publish "" key=q0 body=3
c0.2 tx.commit
c0.3 basic.get q0
c0.3 tx.select
c0.3 basic.ack latest
c0.3 basic.ack latest
c0.3 tx.rollback
"#,
        r#"
#0 c0.1 queue.declare q0
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 tx.select
  = tx.select-ok
  queues: q0=0/0
#2 c0.1 basic.publish "" key=q0 props(exp="soon") body=3
  = sent m0
  c0.1 channel.close by broker 406 PRECONDITION_FAILED (60,40)
  queues: q0=0/0
#3 c0.2 tx.select
  = tx.select-ok
  queues: q0=0/0
#4 c0.2 basic.reject unknown
  = sent tag 1000
  c0.2 channel.close by broker 406 PRECONDITION_FAILED (60,90)
  queues: q0=0/0
#5 c0.2 tx.select
  = tx.select-ok
  queues: q0=0/0
#6 c0.2 basic.publish "" key=q0 body=3
  = sent m1
  queues: q0=0/0
#7 c0.2 tx.commit
  = tx.commit-ok
  queues: q0=1/0
#8 c0.3 basic.get q0
  = basic.get-ok tag=1 m1+3 ex="" rk=q0 left=0 props()
  queues: q0=0/0
#9 c0.3 tx.select
  = tx.select-ok
  queues: q0=0/0
#10 c0.3 basic.ack latest
  = sent tag 1
  queues: q0=0/0
#11 c0.3 basic.ack latest
  = sent tag 1
  c0.3 channel.close by broker 406 PRECONDITION_FAILED (60,80)
  queues: q0=1/0
#12 c0.3 tx.rollback
  = channel.close 406 PRECONDITION_FAILED (90,30)
  queues: q0=1/0
end
  q0 #0 m1+3 redelivered ex="" rk=q0 props()
  q0 empty after 1
  exchanges: -
"#,
    )
    .await;
}

/// queue.declare of an existing queue with another exclusive flag is 405 RESOURCE_LOCKED (was 406).
#[tokio::test]
async fn a_different_exclusive_flag_is_405() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c0.1 queue.declare q0 exclusive
c0.1 queue.declare q0 durable
c0.1 queue.declare q1
c0.1 queue.declare q1 exclusive
"#,
        r#"
#0 c0.1 queue.declare q0 exclusive
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 queue.declare q0 durable
  = channel.close 405 RESOURCE_LOCKED (50,10)
  queues: q0=0/0
#2 c0.1 queue.declare q1
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#3 c0.1 queue.declare q1 exclusive
  = channel.close 405 RESOURCE_LOCKED (50,10)
  queues: q0=0/0 q1=0/0
end
  q0 empty after 0
  q1 empty after 0
  exchanges: -
"#,
    )
    .await;
}

/// x-dead-letter-routing-key without x-dead-letter-exchange, and x-max-priority above 255, are 406.
#[tokio::test]
async fn queue_arguments_rabbitmq_refuses() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c0.1 queue.declare q0 args={x-dead-letter-routing-key:S"k"}
c0.1 queue.declare q1 args={x-max-priority:I(256)}
c0.1 queue.declare q2 args={x-max-priority:I(255)}
"#,
        r#"
#0 c0.1 queue.declare q0 args={x-dead-letter-routing-key:S"k"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#1 c0.1 queue.declare q1 args={x-max-priority:I(256)}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404 q1=404
#2 c0.1 queue.declare q2 args={x-max-priority:I(255)}
  = queue.declare-ok q2 0/0
  queues: q0=404 q1=404 q2=0/0
end
  q0 404
  q1 404
  q2 empty after 0
  exchanges: -
"#,
    )
    .await;
}

/// queue.bind: 404 for a missing exchange before 405; a headers binding needs a valid x-match (406), checked before 405; other exchange types ignore it.
#[tokio::test]
async fn bindings_check_existence_then_arguments_then_exclusivity() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c1.1 queue.declare q0 exclusive
c0.1 queue.bind q0 -> e3 key="a"
c0.1 queue.bind q0 -> amq.headers key="" args={x-match:S"most"}
c0.1 queue.bind q0 -> amq.headers key="" args={x-match:S"any"}
c0.1 exchange.bind amq.direct <- amq.match key="" args={x-match:I(1)}
c0.1 exchange.bind amq.direct <- amq.topic key="" args={x-match:I(1)}
c0.1 exchange.unbind amq.direct <- amq.topic key="" args={x-match:I(1)}
"#,
        r#"
#0 c1.1 queue.declare q0 exclusive
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 queue.bind q0 -> e3 key="a"
  = channel.close 404 NOT_FOUND (50,20)
  queues: q0=0/0
#2 c0.1 queue.bind q0 -> amq.headers key="" args={x-match:S"most"}
  = channel.close 406 PRECONDITION_FAILED (50,20)
  queues: q0=0/0
#3 c0.1 queue.bind q0 -> amq.headers key="" args={x-match:S"any"}
  = channel.close 405 RESOURCE_LOCKED (50,20)
  queues: q0=0/0
#4 c0.1 exchange.bind amq.direct <- amq.match key="" args={x-match:I(1)}
  = channel.close 406 PRECONDITION_FAILED (40,30)
  queues: q0=0/0
#5 c0.1 exchange.bind amq.direct <- amq.topic key="" args={x-match:I(1)}
  = exchange.bind-ok
  queues: q0=0/0
#6 c0.1 exchange.unbind amq.direct <- amq.topic key="" args={x-match:I(1)}
  = exchange.unbind-ok
  queues: q0=0/0
end
  q0 empty after 0
  exchanges: -
"#,
    )
    .await;
}

/// x-overflow drop-head: with x-max-length 0 the message goes; a body over x-max-length-bytes drops itself.
#[tokio::test]
async fn drop_head_counts_the_new_message() {
    lepus_difftest::regression::check(
        r#"
frame_max 131072
c0.1 queue.declare q0 args={x-max-length:I(0)}
c0.1 basic.publish "" key=q0 body=4
c0.1 queue.declare q1 args={x-max-length-bytes:I(10)}
c0.1 basic.publish "" key=q1 body=30
c0.1 basic.publish "" key=q1 body=4
c0.1 basic.publish "" key=q1 body=8
"#,
        r#"
#0 c0.1 queue.declare q0 args={x-max-length:I(0)}
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 basic.publish "" key=q0 body=4
  = sent m0
  queues: q0=0/0
#2 c0.1 queue.declare q1 args={x-max-length-bytes:I(10)}
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#3 c0.1 basic.publish "" key=q1 body=30
  = sent m1
  queues: q0=0/0 q1=0/0
#4 c0.1 basic.publish "" key=q1 body=4
  = sent m2
  queues: q0=0/0 q1=1/0
#5 c0.1 basic.publish "" key=q1 body=8
  = sent m3
  queues: q0=0/0 q1=1/0
end
  q0 empty after 0
  q1 #0 m3+8 ex="" rk=q1 props()
  q1 empty after 1
  exchanges: -
"#,
    )
    .await;
}
