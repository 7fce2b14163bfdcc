//! Divergences the differential tester found, kept as regression tests: each program with the
//! trace RabbitMQ 3.10 gave for it (printed by the tester when it shrank the failure, or by
//! `lepus-difftest expect`). They run against the in-process bundled broker, or against the
//! broker `LEPUS_TEST_AMQP_URL` names (`.ci/run` points it at RabbitMQ, which re-checks the
//! expectations themselves).
//!
//! Each case below is `name: program => expected trace;` with its doc comment; `lepus-difftest
//! run` (when it shrinks a failure) and `lepus-difftest expect` print new cases in this form.

/// One `#[tokio::test]` per case, named as the case: the program (text) must give the expected
/// trace (text), checked by [`lepus_difftest::regression::check`].
macro_rules! regressions {
    ($($(#[$doc:meta])* $name:ident: $program:literal => $expected:literal;)*) => {
        $(
            $(#[$doc])*
            #[tokio::test]
            async fn $name() {
                lepus_difftest::regression::check($program, $expected).await;
            }
        )*
    };
}

regressions! {
/// queue.unbind of a missing binding or queue answers unbind-ok (the bundled broker answered 404; fixed on trust-access, issue 13).
an_unbind_of_what_is_absent_is_ok: r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 queue.unbind q0 -> amq.direct key="a"
c0.1 queue.unbind q1 -> amq.direct key="a"
c0.1 queue.bind q0 -> amq.direct key="a"
c0.1 queue.unbind q0 -> amq.direct key="a"
c0.1 queue.unbind q0 -> amq.direct key="a"
"# => r#"
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
"#;

/// basic.publish: 404 for a missing exchange and 403 for an internal one before the properties; delivery_mode outside 1..2 and a foreign user_id are 406.
a_publish_is_checked_exchange_first_then_its_properties: r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 basic.publish amq.x key=q0 props(exp="soon") body=3
c0.1 exchange.declare e0 direct internal
c0.1 basic.publish e0 key=q0 props(dm=0) body=3
c0.1 basic.publish "" key=q0 props(dm=3) body=3
c0.1 basic.publish "" key=q0 props(uid="nobody") body=3
c0.1 basic.publish "" key=q0 props(dm=2 uid="guest") body=3
c0.1 exchange.delete e0
"# => r#"
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
"#;

/// Inside a transaction a publish and an ack are checked when they arrive (406 at once), not at the commit.
a_transaction_checks_publishes_and_acks_when_they_arrive: r#"
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
"# => r#"
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
"#;

/// queue.declare of an existing queue with another exclusive flag is 405 RESOURCE_LOCKED (was 406).
a_different_exclusive_flag_is_405: r#"
frame_max 131072
c0.1 queue.declare q0 exclusive
c0.1 queue.declare q0 durable
c0.1 queue.declare q1
c0.1 queue.declare q1 exclusive
"# => r#"
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
"#;

/// x-dead-letter-routing-key without x-dead-letter-exchange, and x-max-priority above 255, are 406.
queue_arguments_rabbitmq_refuses: r#"
frame_max 131072
c0.1 queue.declare q0 args={x-dead-letter-routing-key:S"k"}
c0.1 queue.declare q1 args={x-max-priority:I(256)}
c0.1 queue.declare q2 args={x-max-priority:I(255)}
"# => r#"
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
"#;

/// queue.bind: 404 for a missing exchange before 405; a headers binding needs a valid x-match (406), checked before 405; other exchange types ignore it.
bindings_check_existence_then_arguments_then_exclusivity: r#"
frame_max 131072
c1.1 queue.declare q0 exclusive
c0.1 queue.bind q0 -> e3 key="a"
c0.1 queue.bind q0 -> amq.headers key="" args={x-match:S"most"}
c0.1 queue.bind q0 -> amq.headers key="" args={x-match:S"any"}
c0.1 exchange.bind amq.direct <- amq.match key="" args={x-match:I(1)}
c0.1 exchange.bind amq.direct <- amq.topic key="" args={x-match:I(1)}
c0.1 exchange.unbind amq.direct <- amq.topic key="" args={x-match:I(1)}
"# => r#"
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
"#;

/// x-overflow drop-head: with x-max-length 0 the message goes; a body over x-max-length-bytes drops itself.
drop_head_counts_the_new_message: r#"
frame_max 131072
c0.1 queue.declare q0 args={x-max-length:I(0)}
c0.1 basic.publish "" key=q0 body=4
c0.1 queue.declare q1 args={x-max-length-bytes:I(10)}
c0.1 basic.publish "" key=q1 body=30
c0.1 basic.publish "" key=q1 body=4
c0.1 basic.publish "" key=q1 body=8
"# => r#"
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
"#;

/// basic.reject, basic.recover and a channel close requeue within x-max-length(-bytes): drop-head trims before redelivering (the bundled broker redelivered past the limit).
requeued_messages_are_held_to_the_queue_limits: r#"
frame_max 131072
c0.1 queue.declare q1 args={x-max-length:I(0)}
c1.1 basic.consume q1 tag=ct1
c0.1 basic.publish "" key=q1 body=4
c1.1 basic.reject latest requeue
c0.1 queue.declare q2 args={x-max-length-bytes:I(2)}
c1.2 basic.consume q2 tag=ct2
c0.1 basic.publish "" key=q2 body=4
c1.2 basic.recover requeue
c0.1 queue.declare q3 args={x-max-length:I(1)}
c1.3 basic.consume q3 tag=ct3
c0.1 basic.publish "" key=q3 body=4
c0.1 basic.publish "" key=q3 body=5
c1.3 channel.close
"# => r#"
#0 c0.1 queue.declare q1 args={x-max-length:I(0)}
  = queue.declare-ok q1 0/0
  queues: q1=0/0
#1 c1.1 basic.consume q1 tag=ct1
  = basic.consume-ok "ct1"
  queues: q1=0/1
#2 c0.1 basic.publish "" key=q1 body=4
  = sent m0
  c1.1 "ct1" <- m0+4 ex="" rk=q1 props()
  c1.1 tags 1
  queues: q1=0/1
#3 c1.1 basic.reject latest requeue
  = sent tag 1
  queues: q1=0/1
#4 c0.1 queue.declare q2 args={x-max-length-bytes:I(2)}
  = queue.declare-ok q2 0/0
  queues: q1=0/1 q2=0/0
#5 c1.2 basic.consume q2 tag=ct2
  = basic.consume-ok "ct2"
  queues: q1=0/1 q2=0/1
#6 c0.1 basic.publish "" key=q2 body=4
  = sent m1
  c1.2 "ct2" <- m1+4 ex="" rk=q2 props()
  c1.2 tags 1
  queues: q1=0/1 q2=0/1
#7 c1.2 basic.recover requeue
  = basic.recover-ok
  queues: q1=0/1 q2=0/1
#8 c0.1 queue.declare q3 args={x-max-length:I(1)}
  = queue.declare-ok q3 0/0
  queues: q1=0/1 q2=0/1 q3=0/0
#9 c1.3 basic.consume q3 tag=ct3
  = basic.consume-ok "ct3"
  queues: q1=0/1 q2=0/1 q3=0/1
#10 c0.1 basic.publish "" key=q3 body=4
  = sent m2
  c1.3 "ct3" <- m2+4 ex="" rk=q3 props()
  c1.3 tags 1
  queues: q1=0/1 q2=0/1 q3=0/1
#11 c0.1 basic.publish "" key=q3 body=5
  = sent m3
  c1.3 "ct3" <- m3+5 ex="" rk=q3 props()
  c1.3 tags 2
  queues: q1=0/1 q2=0/1 q3=0/1
#12 c1.3 channel.close
  = channel.close-ok
  queues: q1=0/1 q2=0/1 q3=1/0
end
  q1 empty after 0
  q2 empty after 0
  q3 #0 m3+5 redelivered ex="" rk=q3 props()
  q3 empty after 1
  exchanges: -
"#;

/// x-queue-mode is one of the arguments a redeclare must repeat (the bundled broker ignored it).
x_queue_mode_is_compared_on_redeclare: r#"
frame_max 131072
c0.1 queue.declare q4
c0.1 queue.declare q4 args={x-queue-mode:S"lazy"}
c0.2 queue.declare q3 args={x-queue-mode:S"lazy"}
c0.2 queue.declare q3 args={x-queue-mode:S"lazy"}
c0.2 queue.declare q3
c0.3 queue.declare q2 args={x-queue-mode:S"default"}
c0.3 queue.declare q2 args={x-queue-mode:S"lazy"}
"# => r#"
#0 c0.1 queue.declare q4
  = queue.declare-ok q4 0/0
  queues: q4=0/0
#1 c0.1 queue.declare q4 args={x-queue-mode:S"lazy"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q4=0/0
#2 c0.2 queue.declare q3 args={x-queue-mode:S"lazy"}
  = queue.declare-ok q3 0/0
  queues: q3=0/0 q4=0/0
#3 c0.2 queue.declare q3 args={x-queue-mode:S"lazy"}
  = queue.declare-ok q3 0/0
  queues: q3=0/0 q4=0/0
#4 c0.2 queue.declare q3
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q3=0/0 q4=0/0
#5 c0.3 queue.declare q2 args={x-queue-mode:S"default"}
  = queue.declare-ok q2 0/0
  queues: q2=0/0 q3=0/0 q4=0/0
#6 c0.3 queue.declare q2 args={x-queue-mode:S"lazy"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q2=0/0 q3=0/0 q4=0/0
end
  q2 empty after 0
  q3 empty after 0
  q4 empty after 0
  exchanges: -
"#;

/// a message that expires on arrival and finds no consumer is dropped right after the publish, priority queues included (the bundled broker counted it until its timer ran).
a_ttl_0_message_is_gone_at_once: r#"
frame_max 131072
c0.1 queue.declare q0 args={x-max-priority:B(3), x-message-ttl:I(0)}
c0.1 basic.publish "" key=q0 body=1
c0.1 basic.publish "" key=q0 props(pri=2) body=2
c0.1 queue.declare q1 args={x-message-ttl:I(0)}
c0.1 basic.publish "" key=q1 body=3
c0.1 queue.declare q2
c0.1 basic.publish "" key=q2 props(exp="0") body=4
"# => r#"
#0 c0.1 queue.declare q0 args={x-max-priority:B(3), x-message-ttl:I(0)}
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 basic.publish "" key=q0 body=1
  = sent m0
  queues: q0=0/0
#2 c0.1 basic.publish "" key=q0 props(pri=2) body=2
  = sent m1
  queues: q0=0/0
#3 c0.1 queue.declare q1 args={x-message-ttl:I(0)}
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#4 c0.1 basic.publish "" key=q1 body=3
  = sent m2
  queues: q0=0/0 q1=0/0
#5 c0.1 queue.declare q2
  = queue.declare-ok q2 0/0
  queues: q0=0/0 q1=0/0 q2=0/0
#6 c0.1 basic.publish "" key=q2 props(exp="0") body=4
  = sent m3
  queues: q0=0/0 q1=0/0 q2=0/0
end
  q0 empty after 0
  q1 empty after 0
  q2 empty after 0
  exchanges: -
"#;

/// tx: a publish is routed when it arrives (RabbitMQ stores the routed queues with it): its exchange deleted before tx.commit gives commit-ok and, mandatory and unroutable, 312 NO_ROUTE (the bundled broker closed the channel 404 at the commit; seed 20261207001 program 14643).
a_tx_publish_is_routed_at_the_publish_not_the_commit: r#"
frame_max 131072
c0.3 tx.select
c0.1 exchange.declare e0 topic
c0.3 basic.publish e0 key="a.b.c" mandatory body=4
c0.2 exchange.delete e0
c0.3 tx.commit
"# => r#"
#0 c0.3 tx.select
  = tx.select-ok
  queues: -
#1 c0.1 exchange.declare e0 topic
  = exchange.declare-ok
  queues: -
#2 c0.3 basic.publish e0 key="a.b.c" mandatory body=4
  = sent m0
  queues: -
#3 c0.2 exchange.delete e0
  = exchange.delete-ok
  queues: -
#4 c0.3 tx.commit
  = tx.commit-ok
  c0.3 return 312 NO_ROUTE ex=e0 rk="a.b.c" m0+4 props()
  queues: -
end
  exchanges: e0=404
"#;

/// tx: bindings removed or added between a publish and tx.commit do not change where it goes; mandatory and unroutable at the publish is returned at the commit (the bundled broker re-routed at the commit).
bindings_changed_before_a_tx_commit_do_not_reroute: r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 queue.declare q1
c0.1 queue.bind q0 -> amq.direct key="k"
c0.2 tx.select
c0.2 basic.publish amq.direct key="k" body=3
c0.2 basic.publish amq.direct key="j" mandatory body=4
c0.1 queue.unbind q0 -> amq.direct key="k"
c0.1 queue.bind q1 -> amq.direct key="k"
c0.1 queue.bind q1 -> amq.direct key="j"
c0.2 tx.commit
"# => r#"
#0 c0.1 queue.declare q0
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 queue.declare q1
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#2 c0.1 queue.bind q0 -> amq.direct key="k"
  = queue.bind-ok
  queues: q0=0/0 q1=0/0
#3 c0.2 tx.select
  = tx.select-ok
  queues: q0=0/0 q1=0/0
#4 c0.2 basic.publish amq.direct key="k" body=3
  = sent m0
  queues: q0=0/0 q1=0/0
#5 c0.2 basic.publish amq.direct key="j" mandatory body=4
  = sent m1
  queues: q0=0/0 q1=0/0
#6 c0.1 queue.unbind q0 -> amq.direct key="k"
  = queue.unbind-ok
  queues: q0=0/0 q1=0/0
#7 c0.1 queue.bind q1 -> amq.direct key="k"
  = queue.bind-ok
  queues: q0=0/0 q1=0/0
#8 c0.1 queue.bind q1 -> amq.direct key="j"
  = queue.bind-ok
  queues: q0=0/0 q1=0/0
#9 c0.2 tx.commit
  = tx.commit-ok
  c0.2 return 312 NO_ROUTE ex="amq.direct" rk="j" m1+4 props()
  queues: q0=1/0 q1=0/0
end
  q0 #0 m0+3 ex="amq.direct" rk="k" props()
  q0 empty after 1
  q1 empty after 0
  exchanges: -
"#;

/// tx: a queue the publish was routed to and deleted before tx.commit does not get it (returned when mandatory and no routed queue is left); one declared again under the same name does, even unbound, as RabbitMQ delivers to the routed names (the bundled broker routed at the commit).
a_queue_deleted_before_a_tx_commit_does_not_get_the_message: r#"
frame_max 131072
c0.1 queue.declare q0
c0.1 queue.declare q1
c0.1 queue.declare q2
c0.1 queue.declare q3
c0.1 queue.bind q0 -> amq.fanout key=""
c0.1 queue.bind q1 -> amq.fanout key=""
c0.1 queue.bind q3 -> amq.fanout key=""
c0.2 tx.select
c0.2 basic.publish amq.fanout key="" mandatory body=3
c0.2 basic.publish "" key=q0 mandatory body=4
c0.2 basic.publish "" key=q2 mandatory body=5
c0.1 queue.delete q0
c0.1 queue.delete q2
c0.1 queue.declare q2
c0.1 queue.delete q3
c0.1 queue.declare q3
c0.2 tx.commit
"# => r#"
#0 c0.1 queue.declare q0
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 queue.declare q1
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#2 c0.1 queue.declare q2
  = queue.declare-ok q2 0/0
  queues: q0=0/0 q1=0/0 q2=0/0
#3 c0.1 queue.declare q3
  = queue.declare-ok q3 0/0
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#4 c0.1 queue.bind q0 -> amq.fanout key=""
  = queue.bind-ok
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#5 c0.1 queue.bind q1 -> amq.fanout key=""
  = queue.bind-ok
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#6 c0.1 queue.bind q3 -> amq.fanout key=""
  = queue.bind-ok
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#7 c0.2 tx.select
  = tx.select-ok
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#8 c0.2 basic.publish amq.fanout key="" mandatory body=3
  = sent m0
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#9 c0.2 basic.publish "" key=q0 mandatory body=4
  = sent m1
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#10 c0.2 basic.publish "" key=q2 mandatory body=5
  = sent m2
  queues: q0=0/0 q1=0/0 q2=0/0 q3=0/0
#11 c0.1 queue.delete q0
  = queue.delete-ok 0
  queues: q0=404 q1=0/0 q2=0/0 q3=0/0
#12 c0.1 queue.delete q2
  = queue.delete-ok 0
  queues: q0=404 q1=0/0 q2=404 q3=0/0
#13 c0.1 queue.declare q2
  = queue.declare-ok q2 0/0
  queues: q0=404 q1=0/0 q2=0/0 q3=0/0
#14 c0.1 queue.delete q3
  = queue.delete-ok 0
  queues: q0=404 q1=0/0 q2=0/0 q3=404
#15 c0.1 queue.declare q3
  = queue.declare-ok q3 0/0
  queues: q0=404 q1=0/0 q2=0/0 q3=0/0
#16 c0.2 tx.commit
  = tx.commit-ok
  c0.2 return 312 NO_ROUTE ex="" rk=q0 m1+4 props()
  queues: q0=404 q1=1/0 q2=1/0 q3=1/0
end
  q0 404
  q1 #0 m0+3 ex="amq.fanout" rk="" props()
  q1 empty after 1
  q2 #0 m2+5 ex="" rk=q2 props()
  q2 empty after 1
  q3 #0 m0+3 ex="amq.fanout" rk="" props()
  q3 empty after 1
  exchanges: -
"#;

/// x-queue-type: a quorum queue must be durable, not exclusive, not auto-delete, not server-named; an unknown or non-string type is 406; each type refuses the others' arguments (x-max-priority and x-queue-mode on quorum, x-delivery-limit on classic, x-max-length on stream); x-single-active-consumer must be a bool (the bundled broker accepted all of these: x-queue-type was opaque).
quorum_and_stream_declarations_are_checked_as_rabbitmq_checks_them: r#"
frame_max 131072
c0.1 queue.declare q0 args={x-queue-type:S"quorum"}
c0.1 queue.declare q0 durable exclusive args={x-queue-type:S"quorum"}
c0.1 queue.declare q0 durable auto-delete args={x-queue-type:S"quorum"}
c0.1 queue.declare q0 durable args={x-queue-type:S"bogus"}
c0.1 queue.declare q0 durable args={x-queue-type:I(1)}
c0.1 queue.declare "" durable args={x-queue-type:S"quorum"}
c0.1 queue.declare q0 durable args={x-max-priority:I(5), x-queue-type:S"quorum"}
c0.1 queue.declare q0 durable args={x-queue-mode:S"lazy", x-queue-type:S"quorum"}
c0.1 queue.declare q0 durable args={x-delivery-limit:I(5), x-queue-type:S"classic"}
c0.1 queue.declare q0 durable args={x-delivery-limit:I(5)}
c0.1 queue.declare q0 durable args={x-max-length:I(5), x-queue-type:S"stream"}
c0.1 queue.declare q0 args={x-queue-type:S"stream"}
c0.1 queue.declare q0 durable args={x-single-active-consumer:S"yes"}
c0.1 queue.declare q0 durable args={x-delivery-limit:S"x", x-overflow:S"reject-publish-dlx", x-queue-type:S"quorum"}
c0.1 queue.declare q1 durable args={x-max-priority:I(3), x-queue-type:S"classic"}
c0.1 queue.declare "" exclusive args={x-queue-type:S"classic"}
"# => r#"
#0 c0.1 queue.declare q0 args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#1 c0.1 queue.declare q0 durable exclusive args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#2 c0.1 queue.declare q0 durable auto-delete args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#3 c0.1 queue.declare q0 durable args={x-queue-type:S"bogus"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#4 c0.1 queue.declare q0 durable args={x-queue-type:I(1)}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#5 c0.1 queue.declare "" durable args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#6 c0.1 queue.declare q0 durable args={x-max-priority:I(5), x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#7 c0.1 queue.declare q0 durable args={x-queue-mode:S"lazy", x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#8 c0.1 queue.declare q0 durable args={x-delivery-limit:I(5), x-queue-type:S"classic"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#9 c0.1 queue.declare q0 durable args={x-delivery-limit:I(5)}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#10 c0.1 queue.declare q0 durable args={x-max-length:I(5), x-queue-type:S"stream"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#11 c0.1 queue.declare q0 args={x-queue-type:S"stream"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#12 c0.1 queue.declare q0 durable args={x-single-active-consumer:S"yes"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=404
#13 c0.1 queue.declare q0 durable args={x-delivery-limit:S"x", x-overflow:S"reject-publish-dlx", x-queue-type:S"quorum"}
  = queue.declare-ok q0 0/*
  queues: q0=0/*
#14 c0.1 queue.declare q1 durable args={x-max-priority:I(3), x-queue-type:S"classic"}
  = queue.declare-ok q1 0/0
  queues: q0=0/* q1=0/0
#15 c0.1 queue.declare "" exclusive args={x-queue-type:S"classic"}
  = queue.declare-ok sn0 0/0
  queues: q0=0/* q1=0/0 sn0=0/0
end
  q0 empty after 0
  q1 empty after 0
  sn0 empty after 0
  exchanges: -
"#;

/// Redeclares compare the arguments of the queue's type only: an absent x-queue-type is classic; a quorum queue compares x-queue-type and x-delivery-limit (integers of any width) and ignores x-max-priority and x-queue-mode, even invalid; a classic queue ignores x-delivery-limit (the bundled broker accepted classic vs quorum and refused the ignored arguments).
a_redeclare_compares_the_arguments_of_the_queues_type: r#"
frame_max 131072
c0.1 queue.declare q0 durable
c0.1 queue.declare q0 durable args={x-delivery-limit:I(4), x-queue-type:S"classic"}
c0.1 queue.declare q0 durable args={x-queue-type:S"quorum"}
c0.1 queue.declare q1 durable args={x-queue-type:S"classic"}
c0.1 queue.declare q1 durable
c0.1 queue.declare q2 durable args={x-delivery-limit:I(3), x-queue-type:S"quorum"}
c0.1 queue.declare q2 durable args={x-delivery-limit:l(3), x-max-priority:I(300), x-queue-mode:S"eager", x-queue-type:S"quorum"}
c0.1 queue.declare q2 durable
c0.1 queue.declare q2 durable args={x-delivery-limit:I(3), x-queue-type:S"classic"}
c0.1 queue.declare q2 durable args={x-queue-type:S"quorum"}
c0.1 queue.declare q2 durable args={x-delivery-limit:I(4), x-queue-type:S"quorum"}
c0.1 queue.declare q2 durable args={x-delivery-limit:I(3), x-max-length:I(1), x-queue-type:S"quorum"}
c0.1 queue.declare q2 args={x-delivery-limit:I(3), x-queue-type:S"quorum"}
c0.1 queue.declare q2 durable exclusive args={x-delivery-limit:I(3), x-queue-type:S"quorum"}
c1.1 queue.declare q3 exclusive
c1.1 queue.declare q3 exclusive args={x-queue-type:S"quorum"}
c1.1 queue.declare q3 exclusive args={x-queue-type:S"classic"}
"# => r#"
#0 c0.1 queue.declare q0 durable
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.1 queue.declare q0 durable args={x-delivery-limit:I(4), x-queue-type:S"classic"}
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#2 c0.1 queue.declare q0 durable args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0
#3 c0.1 queue.declare q1 durable args={x-queue-type:S"classic"}
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#4 c0.1 queue.declare q1 durable
  = queue.declare-ok q1 0/0
  queues: q0=0/0 q1=0/0
#5 c0.1 queue.declare q2 durable args={x-delivery-limit:I(3), x-queue-type:S"quorum"}
  = queue.declare-ok q2 0/*
  queues: q0=0/0 q1=0/0 q2=0/*
#6 c0.1 queue.declare q2 durable args={x-delivery-limit:l(3), x-max-priority:I(300), x-queue-mode:S"eager", x-queue-type:S"quorum"}
  = queue.declare-ok q2 0/*
  queues: q0=0/0 q1=0/0 q2=0/*
#7 c0.1 queue.declare q2 durable
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#8 c0.1 queue.declare q2 durable args={x-delivery-limit:I(3), x-queue-type:S"classic"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#9 c0.1 queue.declare q2 durable args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#10 c0.1 queue.declare q2 durable args={x-delivery-limit:I(4), x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#11 c0.1 queue.declare q2 durable args={x-delivery-limit:I(3), x-max-length:I(1), x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#12 c0.1 queue.declare q2 args={x-delivery-limit:I(3), x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#13 c0.1 queue.declare q2 durable exclusive args={x-delivery-limit:I(3), x-queue-type:S"quorum"}
  = channel.close 405 RESOURCE_LOCKED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/*
#14 c1.1 queue.declare q3 exclusive
  = queue.declare-ok q3 0/0
  queues: q0=0/0 q1=0/0 q2=0/* q3=0/0
#15 c1.1 queue.declare q3 exclusive args={x-queue-type:S"quorum"}
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/0 q1=0/0 q2=0/* q3=0/0
#16 c1.1 queue.declare q3 exclusive args={x-queue-type:S"classic"}
  = queue.declare-ok q3 0/0
  queues: q0=0/0 q1=0/0 q2=0/* q3=0/0
end
  q0 empty after 0
  q1 empty after 0
  q2 empty after 0
  q3 empty after 0
  exchanges: -
"#;

/// Consumers of a quorum queue (RabbitMQ 3.10): basic.consume exclusive is ignored (any consumers share the queue), and a consume under a non-zero global prefetch closes the connection with 540 (the bundled broker answered 403 and accepted the global qos).
a_quorum_queue_ignores_exclusive_consumers_and_refuses_global_qos: r#"
frame_max 131072
c0.1 queue.declare q0 durable args={x-queue-type:S"quorum"}
c0.1 basic.publish "" key=q0 body=3
c0.1 basic.publish "" key=q0 body=4
c0.1 basic.qos 1
c0.1 basic.consume q0 tag=ct0 exclusive
c0.2 basic.consume q0 tag=ct1
c0.1 basic.ack #0
c1.1 basic.qos 0 global
c1.1 basic.consume q0 tag=ct2 exclusive
c1.2 basic.qos 2 global
c1.2 basic.consume q0 tag=ct3
c0.2 basic.ack #0
"# => r#"
#0 c0.1 queue.declare q0 durable args={x-queue-type:S"quorum"}
  = queue.declare-ok q0 0/*
  queues: q0=0/*
#1 c0.1 basic.publish "" key=q0 body=3
  = sent m0
  queues: q0=1/*
#2 c0.1 basic.publish "" key=q0 body=4
  = sent m1
  queues: q0=2/*
#3 c0.1 basic.qos 1
  = basic.qos-ok
  queues: q0=2/*
#4 c0.1 basic.consume q0 tag=ct0 exclusive
  = basic.consume-ok "ct0"
  c0.1 "ct0" <- m0+3 ex="" rk=q0 props()
  c0.1 tags 1
  queues: q0=1/*
#5 c0.2 basic.consume q0 tag=ct1
  = basic.consume-ok "ct1"
  c0.2 "ct1" <- m1+4 ex="" rk=q0 props()
  c0.2 tags 1
  queues: q0=0/*
#6 c0.1 basic.ack #0
  = sent tag 1
  queues: q0=0/*
#7 c1.1 basic.qos 0 global
  = basic.qos-ok
  queues: q0=0/*
#8 c1.1 basic.consume q0 tag=ct2 exclusive
  = basic.consume-ok "ct2"
  queues: q0=0/*
#9 c1.2 basic.qos 2 global
  = basic.qos-ok
  queues: q0=0/*
#10 c1.2 basic.consume q0 tag=ct3
  = connection closed
  c1 connection.close by broker 540 NOT_IMPLEMENTED (60,20)
  queues: q0=0/*
#11 c0.2 basic.ack #0
  = sent tag 1
  queues: q0=0/*
end
  q0 empty after 0
  exchanges: -
"#;

/// x-overflow on a quorum queue (RabbitMQ 3.10, rabbit_fifo): reject-publish takes the message that goes over the limit, refuses the next ones until the queue is back at 80% of it; reject-publish-dlx is drop-head (the bundled broker refused at the limit, as a classic queue does).
a_quorum_queue_refuses_publishes_once_over_its_limit: r#"
frame_max 131072
c0.1 queue.declare q0 durable args={x-max-length:I(1), x-overflow:S"reject-publish", x-queue-type:S"quorum"}
c0.1 queue.declare q1 durable args={x-max-length:I(1), x-overflow:S"reject-publish-dlx", x-queue-type:S"quorum"}
c0.1 queue.declare q2 durable args={x-max-length-bytes:I(5), x-overflow:S"reject-publish", x-queue-type:S"quorum"}
c0.1 confirm.select
c0.1 basic.publish "" key=q0 body=3
c0.1 basic.publish "" key=q0 body=4
c0.1 basic.publish "" key=q0 body=5
c0.1 basic.publish "" key=q1 body=3
c0.1 basic.publish "" key=q1 body=4
c0.1 basic.publish "" key=q1 body=5
c0.1 basic.publish "" key=q2 body=4
c0.1 basic.publish "" key=q2 body=4
c0.1 basic.publish "" key=q2 body=4
c0.1 basic.get q0 no-ack
c0.1 basic.publish "" key=q0 body=6
c0.1 basic.get q0 no-ack
c0.1 basic.publish "" key=q0 body=7
"# => r#"
#0 c0.1 queue.declare q0 durable args={x-max-length:I(1), x-overflow:S"reject-publish", x-queue-type:S"quorum"}
  = queue.declare-ok q0 0/*
  queues: q0=0/*
#1 c0.1 queue.declare q1 durable args={x-max-length:I(1), x-overflow:S"reject-publish-dlx", x-queue-type:S"quorum"}
  = queue.declare-ok q1 0/*
  queues: q0=0/* q1=0/*
#2 c0.1 queue.declare q2 durable args={x-max-length-bytes:I(5), x-overflow:S"reject-publish", x-queue-type:S"quorum"}
  = queue.declare-ok q2 0/*
  queues: q0=0/* q1=0/* q2=0/*
#3 c0.1 confirm.select
  = confirm.select-ok
  queues: q0=0/* q1=0/* q2=0/*
#4 c0.1 basic.publish "" key=q0 body=3
  = sent m0
  c0.1 confirms ack=1 nack=-
  queues: q0=1/* q1=0/* q2=0/*
#5 c0.1 basic.publish "" key=q0 body=4
  = sent m1
  c0.1 confirms ack=2 nack=-
  queues: q0=2/* q1=0/* q2=0/*
#6 c0.1 basic.publish "" key=q0 body=5
  = sent m2
  c0.1 confirms ack=- nack=3
  queues: q0=2/* q1=0/* q2=0/*
#7 c0.1 basic.publish "" key=q1 body=3
  = sent m3
  c0.1 confirms ack=4 nack=-
  queues: q0=2/* q1=1/* q2=0/*
#8 c0.1 basic.publish "" key=q1 body=4
  = sent m4
  c0.1 confirms ack=5 nack=-
  queues: q0=2/* q1=1/* q2=0/*
#9 c0.1 basic.publish "" key=q1 body=5
  = sent m5
  c0.1 confirms ack=6 nack=-
  queues: q0=2/* q1=1/* q2=0/*
#10 c0.1 basic.publish "" key=q2 body=4
  = sent m6
  c0.1 confirms ack=7 nack=-
  queues: q0=2/* q1=1/* q2=1/*
#11 c0.1 basic.publish "" key=q2 body=4
  = sent m7
  c0.1 confirms ack=8 nack=-
  queues: q0=2/* q1=1/* q2=2/*
#12 c0.1 basic.publish "" key=q2 body=4
  = sent m8
  c0.1 confirms ack=- nack=9
  queues: q0=2/* q1=1/* q2=2/*
#13 c0.1 basic.get q0 no-ack
  = basic.get-ok tag=1 m0+3 ex="" rk=q0 left=1 props()
  queues: q0=1/* q1=1/* q2=2/*
#14 c0.1 basic.publish "" key=q0 body=6
  = sent m9
  c0.1 confirms ack=- nack=10
  queues: q0=1/* q1=1/* q2=2/*
#15 c0.1 basic.get q0 no-ack
  = basic.get-ok tag=2 m1+4 ex="" rk=q0 left=0 props()
  queues: q0=0/* q1=1/* q2=2/*
#16 c0.1 basic.publish "" key=q0 body=7
  = sent m10
  c0.1 confirms ack=11 nack=-
  queues: q0=1/* q1=1/* q2=2/*
end
  q0 #0 m10+7 ex="" rk=q0 props()
  q0 empty after 1
  q1 #0 m5+5 ex="" rk=q1 props()
  q1 empty after 1
  q2 #0 m6+4 ex="" rk=q2 props()
  q2 #1 m7+4 ex="" rk=q2 props()
  q2 empty after 2
  exchanges: -
"#;

/// x-single-active-consumer on a classic queue (RabbitMQ 3.10): the first consumer gets the messages (its prefetch applies, the rest waits; basic.get takes from the queue as usual), the others wait and count in declare-ok; when the active one's channel closes its unacked message comes back and the first of the highest priority takes over; an exclusive consume is 403; a redeclare without the argument is 406 (the bundled broker ignored the argument).
a_classic_single_active_consumer_queue_serves_one_consumer_at_a_time: r#"
frame_max 131072
c0.1 queue.declare q0 args={x-single-active-consumer:t(1)}
c0.2 basic.qos 1
c0.2 basic.consume q0 tag=ct0
c0.3 basic.consume q0 tag=ct1
c1.1 basic.consume q0 tag=ct2 args={x-priority:I(5)}
c0.1 queue.declare q0 args={x-single-active-consumer:t(1)}
c0.1 basic.publish "" key=q0 body=1
c0.1 basic.publish "" key=q0 body=2
c0.1 basic.get q0 no-ack
c0.1 basic.publish "" key=q0 body=3
c0.2 channel.close
c0.1 basic.publish "" key=q0 body=4
c1.2 basic.consume q0 tag=ct3 exclusive
c0.1 queue.declare q0
"# => r#"
#0 c0.1 queue.declare q0 args={x-single-active-consumer:t(1)}
  = queue.declare-ok q0 0/0
  queues: q0=0/0
#1 c0.2 basic.qos 1
  = basic.qos-ok
  queues: q0=0/0
#2 c0.2 basic.consume q0 tag=ct0
  = basic.consume-ok "ct0"
  queues: q0=0/1
#3 c0.3 basic.consume q0 tag=ct1
  = basic.consume-ok "ct1"
  queues: q0=0/2
#4 c1.1 basic.consume q0 tag=ct2 args={x-priority:I(5)}
  = basic.consume-ok "ct2"
  queues: q0=0/3
#5 c0.1 queue.declare q0 args={x-single-active-consumer:t(1)}
  = queue.declare-ok q0 0/3
  queues: q0=0/3
#6 c0.1 basic.publish "" key=q0 body=1
  = sent m0
  c0.2 "ct0" <- m0+3 ex="" rk=q0 props()
  c0.2 tags 1
  queues: q0=0/3
#7 c0.1 basic.publish "" key=q0 body=2
  = sent m1
  queues: q0=1/3
#8 c0.1 basic.get q0 no-ack
  = basic.get-ok tag=1 m1+3 ex="" rk=q0 left=0 props()
  queues: q0=0/3
#9 c0.1 basic.publish "" key=q0 body=3
  = sent m2
  queues: q0=1/3
#10 c0.2 channel.close
  = channel.close-ok
  c1.1 "ct2" <- m0+3 redelivered ex="" rk=q0 props()
  c1.1 "ct2" <- m2+3 ex="" rk=q0 props()
  c1.1 tags 1-2
  queues: q0=0/2
#11 c0.1 basic.publish "" key=q0 body=4
  = sent m3
  c1.1 "ct2" <- m3+4 ex="" rk=q0 props()
  c1.1 tags 3
  queues: q0=0/2
#12 c1.2 basic.consume q0 tag=ct3 exclusive
  = channel.close 403 ACCESS_REFUSED (60,20)
  queues: q0=0/2
#13 c0.1 queue.declare q0
  = channel.close 406 PRECONDITION_FAILED (50,10)
  queues: q0=0/2
end
  q0 empty after 0
  exchanges: -
"#;

/// x-single-active-consumer on a quorum queue (RabbitMQ 3.10): exclusive is ignored, the second consumer waits and takes over at once when the first cancels; basic.get is 405 (the bundled broker ignored the argument).
a_quorum_single_active_consumer_queue_hands_over_on_cancel: r#"
frame_max 131072
c0.1 queue.declare q1 durable args={x-queue-type:S"quorum", x-single-active-consumer:t(1)}
c0.1 basic.consume q1 tag=ct0
c0.1 basic.consume q1 tag=ct1 exclusive
c0.1 basic.publish "" key=q1 body=1
c0.1 basic.cancel ct0
c0.1 basic.publish "" key=q1 body=2
c0.1 basic.ack latest multiple
c0.1 basic.get q1
"# => r#"
#0 c0.1 queue.declare q1 durable args={x-queue-type:S"quorum", x-single-active-consumer:t(1)}
  = queue.declare-ok q1 0/*
  queues: q1=0/*
#1 c0.1 basic.consume q1 tag=ct0
  = basic.consume-ok "ct0"
  queues: q1=0/*
#2 c0.1 basic.consume q1 tag=ct1 exclusive
  = basic.consume-ok "ct1"
  queues: q1=0/*
#3 c0.1 basic.publish "" key=q1 body=1
  = sent m0
  c0.1 "ct0" <- m0+3 ex="" rk=q1 props()
  c0.1 tags 1
  queues: q1=0/*
#4 c0.1 basic.cancel ct0
  = basic.cancel-ok "ct0"
  queues: q1=0/*
#5 c0.1 basic.publish "" key=q1 body=2
  = sent m1
  c0.1 "ct1" <- m1+3 ex="" rk=q1 props()
  c0.1 tags 2
  queues: q1=0/*
#6 c0.1 basic.ack latest multiple
  = sent tag 2
  queues: q1=0/*
#7 c0.1 basic.get q1
  = channel.close 405 RESOURCE_LOCKED (60,70)
  queues: q1=0/*
end
  q1 405
  exchanges: -
"#;
}
