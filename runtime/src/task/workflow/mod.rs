//! Workflows (issue 21): [`chain`], [`group`] and [`chord`] of `#[lepus::task]`s, kept moving
//! by the workers and stored on the broker alone.
//!
//! Each step is an ordinary task message on its task's queue, run with the task's retries.
//! - **chain**: the steps after a step travel in its message's `x-lepus-chain` header; the
//!   worker that ran a step publishes the next one (confirmed, its output spliced in as the
//!   first argument) before it acks the step. A crash in between publishes the next step
//!   twice with the same `message_id` (at least once, never lost). The last step's result
//!   goes to the chain's result queue. A step failing after its retries ends the chain: its
//!   error is the chain's result.
//! - **group**: each member (a chain) is submitted with a result queue of its own; the
//!   [`GroupHandle`] reads them in order.
//! - **chord**: members put their outcomes into a durable queue; the worker that completes
//!   the last one takes the chord's single token message and, in one AMQP transaction,
//!   publishes the callback and acks the token (`chord_completion`): the callback is enqueued
//!   exactly once. A member failing after its retries: the callback does not run, and the
//!   chord's result is [`WorkflowError::Members`], listing every failed member.
//!
//! # Layout
//! - `step`: [`Signature`], [`Partial`] (what `add::signature(..)` / `add::partial(..)`
//!   build) and `Step`, a call on the wire.
//! - `canvas`: [`Chain`], [`Group`], [`Chord`], their builders and `submit`.
//! - `flow_headers`: the step headers and what a worker reads from them.
//! - `dispatch`: the worker side after a step: next step, or chord.
//! - `chord_completion`: a chord's queues, its token, the election of the completer.
//! - `workflow_handle`: [`WorkflowHandle`], [`GroupHandle`], [`WorkflowError`].

mod canvas;
pub(crate) mod chord_completion;
pub(crate) mod dispatch;
pub mod flow_headers;
mod step;
mod workflow_handle;

pub use canvas::{chain, chord, group, Chain, Chord, Group};
pub use step::{Partial, Signature};
pub use workflow_handle::{GroupHandle, MemberFailure, WorkflowError, WorkflowHandle};
