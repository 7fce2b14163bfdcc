//! What a worker does after a workflow step ends, before it acks the step's message: on
//! success, publish the next step (confirmed) or record the member's output in its chord; on
//! the last failure, record the failure in the chord (a chain's failure goes to its result
//! queue as any task's does, see `task_handler`). A crash between the publish and the ack runs
//! the step again and publishes the next step twice, with the same `message_id`: at least
//! once, never lost.

use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use crate::amqp::{publish_mandatory, returned_no_route};
use crate::envelope::CONTENT_TYPE;
use crate::task::result_wire::Status;
use crate::task::workflow::chord_completion::{self, MemberOutcome};
use crate::task::workflow::flow_headers::{self, Flow};
use crate::worker::publisher::WorkerPublisher;

/// After step `task` returned `output` (its encoded output): the next step, or the chord.
/// `Ok` for a step that is the end of an ordinary chain (its result goes to the result queue).
pub(crate) async fn after_success(
    publisher: &WorkerPublisher,
    task_headers: Option<&FieldTable>,
    flow: &Flow,
    task: &str,
    output: &[u8],
) -> Result<(), String> {
    if let Some((next, rest)) = flow.next.split_first() {
        let body = next.body(Some(output))?;
        let table = flow_headers::step_headers(next, rest, &flow_headers::carried(task_headers))?;
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(next.id.as_str().into())
            .with_timestamp(
                u64::try_from(crate::task::headers::now_ms() / 1000).unwrap_or_default(),
            )
            .with_headers(table);
        let opened = publisher
            .confirmed()
            .await
            .map_err(|e| format!("no publishing channel: {e}"))?;
        let confirm = publish_mandatory(&opened.channel, next.queue.as_str(), &body, properties)
            .await
            .map_err(|e| format!("publishing step {} to {}: {e}", next.task, next.queue))?;
        return match confirm.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(confirmation) if returned_no_route(&confirmation) => {
                // The submitting client declared it; someone deleted it since. The step runs
                // again later (its message is requeued) and the queue may be back by then.
                Err(format!(
                    "the queue {} of step {} is gone",
                    next.queue, next.task
                ))
            }
            Ok(other) => Err(format!(
                "{} refused step {}: {other:?}",
                next.queue, next.task
            )),
            Err(err) => Err(format!("confirm of step {}: {err}", next.task)),
        };
    }
    match &flow.chord {
        Some(slot) => {
            chord_completion::member_done(publisher, slot, task, MemberOutcome::Succeeded(output))
                .await
        }
        None => Ok(()),
    }
}

/// After the last attempt of step `task` failed: records it in the chord, if any.
pub(crate) async fn after_failure(
    publisher: &WorkerPublisher,
    flow: &Flow,
    task: &str,
    status: Status,
    attempts: u32,
    error: &str,
) -> Result<(), String> {
    match &flow.chord {
        Some(slot) => {
            chord_completion::member_done(
                publisher,
                slot,
                task,
                MemberOutcome::Failed {
                    status,
                    attempts,
                    error,
                },
            )
            .await
        }
        None => Ok(()),
    }
}
