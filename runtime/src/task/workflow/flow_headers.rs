//! The headers that make a task message a step of a workflow, and what a worker reads from them.
//!
//! # Headers of a step's task message (AMQP field table, RabbitMQ's errata tags)
//! | header                  | tag | value                                                       |
//! |-------------------------|-----|-------------------------------------------------------------|
//! | `x-lepus-chain`         | `S` | MessagePack array of the steps after this one (`Step`)      |
//! | `x-lepus-chord-queue`   | `S` | the chord's results queue, when this chain is a chord member|
//! | `x-lepus-chord-index`   | `l` | the member's index in the chord (0-based)                   |
//! | `x-lepus-chord-size`    | `l` | the chord's member count                                    |
//! | `x-lepus-result-queue`  | `S` | where the last step's result goes (see `result_wire`)       |
//!
//! A message without `x-lepus-chain` and `x-lepus-chord-queue` is an ordinary task. Only a
//! queue whose name holds `lepus.chord.` is taken as a chord queue: a message must not make a
//! worker publish into a queue of its choosing (as `result_wire::destination`).

use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::task::headers;
use crate::task::result_wire::{RESULT_QUEUE, RESULT_TTL};
use crate::task::workflow::step::Step;

/// The steps after this one (`S`: MessagePack bytes).
pub const CHAIN: &str = "x-lepus-chain";
/// The results queue of the chord this chain is a member of (`S`).
pub const CHORD_QUEUE: &str = "x-lepus-chord-queue";
/// The member's index in its chord (`l`).
pub const CHORD_INDEX: &str = "x-lepus-chord-index";
/// The chord's member count (`l`).
pub const CHORD_SIZE: &str = "x-lepus-chord-size";
/// On a chord's failed result: how many members failed (`l`); the body lists them.
pub const FAILED_MEMBERS: &str = "x-lepus-failed-members";

/// The part of every chord queue's name (after the client's queue prefix).
pub(crate) const CHORD_QUEUE_PART: &str = "lepus.chord.";

/// A chord member's place: where its chain's final outcome goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChordSlot {
    /// The chord's results queue (its token queue is this name + `.token`).
    pub(crate) queue: String,
    pub(crate) index: u32,
    pub(crate) size: u32,
}

impl ChordSlot {
    /// The name of the queue holding the chord's single token message.
    pub(crate) fn token_queue(&self) -> String {
        token_queue_of(&self.queue)
    }
}

/// The token queue of chord queue `queue`.
pub(crate) fn token_queue_of(queue: &str) -> String {
    format!("{queue}.token")
}

/// What a delivery's headers say about its workflow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Flow {
    /// The steps still to run after this one.
    pub(crate) next: Vec<Step>,
    /// Set on every step of a chord member's chain.
    pub(crate) chord: Option<ChordSlot>,
}

impl Flow {
    /// Reads the workflow headers; an `Err` for a chain header that does not decode (the step
    /// is dead-lettered: running it would silently drop the steps after it).
    pub(crate) fn of(task_headers: Option<&FieldTable>) -> Result<Flow, String> {
        let next = match task_headers.and_then(|h| h.inner().get(CHAIN)) {
            None => Vec::new(),
            Some(AMQPValue::LongString(bytes)) => crate::envelope::decode_bounded(bytes.as_bytes())
                .map_err(|e| format!("the {CHAIN} header does not decode: {e}"))?,
            Some(_) => return Err(format!("the {CHAIN} header is not a string")),
        };
        if !next.iter().all(Step::fits_short_strings) {
            return Err(format!(
                "a step in the {CHAIN} header names a queue or an id over 255 bytes"
            ));
        }
        let chord = headers::string(task_headers, CHORD_QUEUE)
            .filter(|q| q.contains(CHORD_QUEUE_PART) && q.len() <= 240)
            .and_then(|queue| {
                let index = u32::try_from(headers::int(task_headers, CHORD_INDEX)?).ok()?;
                let size = u32::try_from(headers::int(task_headers, CHORD_SIZE)?).ok()?;
                (index < size).then_some(ChordSlot { queue, index, size })
            });
        Ok(Flow { next, chord })
    }

    /// True when this step is part of a workflow (more steps, or a chord member).
    pub(crate) fn is_workflow(&self) -> bool {
        !self.next.is_empty() || self.chord.is_some()
    }
}

/// The headers of a step's task message: the task name, its enqueue time, the steps after it,
/// and what the whole chain carries (`carried`: its result queue, its chord slot, its trace).
pub(crate) fn step_headers(
    step: &Step,
    rest: &[Step],
    carried: &FieldTable,
) -> Result<FieldTable, String> {
    let mut table = carried.clone();
    table.insert(
        crate::envelope::HEADER_METHOD.into(),
        headers::long_string(&step.task),
    );
    headers::insert_int(&mut table, headers::ENQUEUED_AT, headers::now_ms());
    if !rest.is_empty() {
        let mut bytes = Vec::new();
        crate::envelope::encode_into(&mut bytes, rest)
            .map_err(|e| format!("the steps after {} do not encode: {e}", step.task))?;
        table.insert(CHAIN.into(), AMQPValue::LongString(LongString::from(bytes)));
    }
    Ok(table)
}

/// The headers a chain carries from each step to the next (result queue, chord slot, trace).
pub(crate) fn carried(task_headers: Option<&FieldTable>) -> FieldTable {
    const CARRIED: [&str; 8] = [
        RESULT_QUEUE,
        RESULT_TTL,
        CHORD_QUEUE,
        CHORD_INDEX,
        CHORD_SIZE,
        crate::context::HEADER_TRACE_ID,
        crate::observe::propagation::HEADER_TRACEPARENT,
        crate::observe::propagation::HEADER_TRACESTATE,
    ];
    let mut table = FieldTable::default();
    if let Some(h) = task_headers {
        for (key, value) in h.inner() {
            if CARRIED.contains(&key.as_str()) {
                table.insert(key.clone(), value.clone());
            }
        }
    }
    table
}

/// The chord slot headers of member `index` of `size`.
pub(crate) fn chord_headers(table: &mut FieldTable, queue: &str, index: u32, size: u32) {
    table.insert(CHORD_QUEUE.into(), headers::long_string(queue));
    headers::insert_int(table, CHORD_INDEX, i64::from(index));
    headers::insert_int(table, CHORD_SIZE, i64::from(size));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    fn step(task: &str) -> Step {
        Step {
            queue: "q".into(),
            task: task.into(),
            args: vec![0x90],
            partial: true,
            id: format!("id-{task}"),
        }
    }

    #[test]
    fn a_steps_headers_round_trip() {
        let mut carried_in = FieldTable::default();
        chord_headers(&mut carried_in, "p.lepus.chord.x", 3, 10);
        carried_in.insert(
            RESULT_QUEUE.into(),
            headers::long_string("p.lepus.result.x"),
        );
        carried_in.insert("x-lepus-attempts".into(), AMQPValue::LongLongInt(2));
        let kept = carried(Some(&carried_in));
        assert!(kept.inner().get("x-lepus-attempts").is_none());
        let table = step_headers(&step("a"), &[step("b"), step("c")], &kept).unwrap();
        let flow = Flow::of(Some(&table)).unwrap();
        assert_eq!(flow.next, vec![step("b"), step("c")]);
        assert_eq!(
            flow.chord,
            Some(ChordSlot {
                queue: "p.lepus.chord.x".into(),
                index: 3,
                size: 10
            })
        );
        assert!(flow.is_workflow());
        assert_eq!(Flow::of(None).unwrap(), Flow::default());
    }

    #[test]
    fn foreign_queues_and_bad_chains_are_refused() {
        let mut table = FieldTable::default();
        chord_headers(&mut table, "emails", 0, 1);
        assert_eq!(Flow::of(Some(&table)).unwrap().chord, None);
        let mut table = FieldTable::default();
        chord_headers(&mut table, "lepus.chord.x", 5, 5);
        assert_eq!(Flow::of(Some(&table)).unwrap().chord, None);
        let mut table = FieldTable::default();
        table.insert(CHAIN.into(), headers::long_string("not msgpack steps"));
        assert!(Flow::of(Some(&table)).is_err());
        // A step whose queue or id is no AMQP short string: refused, not a panic later.
        for long in [
            Step {
                queue: "q".repeat(256),
                ..step("b")
            },
            Step {
                id: "i".repeat(256),
                ..step("b")
            },
        ] {
            let table = step_headers(&step("a"), &[long], &FieldTable::default()).unwrap();
            assert!(Flow::of(Some(&table)).is_err());
        }
        let fits = Step {
            queue: "q".repeat(255),
            ..step("b")
        };
        let table = step_headers(&step("a"), &[fits], &FieldTable::default()).unwrap();
        assert!(Flow::of(Some(&table)).is_ok());
    }
}
