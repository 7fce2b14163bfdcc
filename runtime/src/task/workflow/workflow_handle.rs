//! [`WorkflowHandle`]: the result of a chain or a chord (its last step's output, or which step
//! failed), [`GroupHandle`]: a group's results in order, and [`WorkflowError`].
//!
//! A workflow's result lives in a result queue like a task's (`task_handle` has the storage
//! and its costs): `lepus.result.<workflow id>`, written by the worker that ran the last step,
//! or by the worker that completed a chord whose members failed.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::envelope::HEADER_METHOD;
use crate::error::{Error, Never};
use crate::task::headers;
use crate::task::result_wire::{self, Status};
use crate::task::side_consumer::SideConsumer;
use crate::task::task_handle::result_queue_name;
use crate::task::workflow::flow_headers::FAILED_MEMBERS;

/// A member of a group or chord that failed after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFailure {
    /// The member's index in the group.
    pub index: u32,
    /// The task whose failure ended the member (a step of the member's chain).
    pub task: String,
    /// That task's last error.
    pub error: String,
}

/// Why a workflow has no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A step of the chain failed after its retries (the steps after it never ran).
    #[error("step {task} failed after {attempts} attempts: {error}")]
    Failed {
        /// The failing step's task name.
        task: String,
        /// Its attempts.
        attempts: u32,
        /// Its last error (`x-lepus-error`).
        error: String,
        /// It was dead-lettered without returning an error (a panic, its time limit, ...).
        dead_lettered: bool,
    },
    /// Members of the group or chord failed after their retries; a chord's callback did not
    /// run.
    #[error("{} members failed", .0.len())]
    Members(Vec<MemberFailure>),
    /// No result within the timeout (the workflow may still be running).
    #[error("no workflow result within {0:?}")]
    Timeout(Duration),
    /// The result queue is gone: the result expired, or there never was such a workflow.
    #[error("no result is kept for this workflow (expired or unknown id)")]
    Gone,
    /// The result does not decode as the workflow's output type.
    #[error("workflow result does not decode: {0}")]
    Decode(String),
    /// The broker could not be asked.
    #[error("cannot read the workflow result: {0}")]
    Client(#[source] Error),
}

impl From<Error> for WorkflowError {
    fn from(err: Error) -> Self {
        WorkflowError::Client(err)
    }
}

/// A submitted chain or chord; `result` gives its last step's output. Any process gets it
/// again with [`WorkflowHandle::from_id`].
pub struct WorkflowHandle<O> {
    client: Client,
    id: String,
    queue: String,
    output: PhantomData<fn() -> O>,
}

clone_for_any!(WorkflowHandle<O> { client, id, queue }, output);

impl<O> std::fmt::Debug for WorkflowHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<O: DeserializeOwned> WorkflowHandle<O> {
    /// The handle of workflow `id` (what [`WorkflowHandle::id`] gave in the submitting
    /// process).
    pub fn from_id(client: &Client, id: impl Into<String>) -> Self {
        let id = id.into();
        WorkflowHandle {
            client: client.clone(),
            queue: result_queue_name(client.queue_prefix(), &id),
            id,
            output: PhantomData,
        }
    }

    /// The workflow's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The result queue's name.
    pub fn result_queue(&self) -> &str {
        &self.queue
    }

    /// Waits up to `timeout` for the workflow's result. The result stays on the broker (any
    /// number of readers get it, until it expires). Returns by the timeout, whatever the
    /// broker does (opening the channel and its close-ok count against it).
    pub async fn result(&self, timeout: Duration) -> Result<O, WorkflowError> {
        let read = async |reader: &mut SideConsumer| self.final_message(reader).await;
        SideConsumer::read_within(&self.client, timeout, read)
            .await
            .unwrap_or(Err(WorkflowError::Timeout(timeout)))
    }

    async fn final_message(&self, reader: &mut SideConsumer) -> Result<O, WorkflowError> {
        reader.consume(&self.queue).await.map_err(classify)?;
        while let Some(delivery) = reader.next().await {
            let delivery = delivery.map_err(classify)?;
            let h = delivery.properties.headers().as_ref();
            let Some(status) =
                headers::string(h, result_wire::STATUS).and_then(|s| Status::parse(&s))
            else {
                continue;
            };
            match status {
                Status::Succeeded => {
                    return crate::envelope::decode_bounded(&delivery.data)
                        .map_err(|e| WorkflowError::Decode(e.to_string()))
                }
                Status::Failed | Status::DeadLettered => {
                    if headers::int(h, FAILED_MEMBERS).is_some() {
                        let members = crate::envelope::decode_bounded(&delivery.data)
                            .map_err(|e| WorkflowError::Decode(e.to_string()))?;
                        return Err(WorkflowError::Members(members));
                    }
                    return Err(WorkflowError::Failed {
                        task: headers::string(h, HEADER_METHOD).unwrap_or_default(),
                        attempts: headers::attempts(h),
                        error: headers::string(h, headers::ERROR).unwrap_or_default(),
                        dead_lettered: status == Status::DeadLettered,
                    });
                }
                Status::Running | Status::Retrying => {}
            }
        }
        Err(WorkflowError::Gone)
    }
}

fn classify(err: lapin::Error) -> WorkflowError {
    let err = Error::<Never>::Transport(err);
    match err.reply_code() {
        Some(404) => WorkflowError::Gone,
        _ => WorkflowError::Client(err),
    }
}

/// A submitted group: its members' results in order.
pub struct GroupHandle<O> {
    pub(crate) id: String,
    pub(crate) members: Vec<WorkflowHandle<O>>,
}

clone_for_any!(GroupHandle<O> { id, members });

impl<O> std::fmt::Debug for GroupHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupHandle")
            .field("id", &self.id)
            .field("members", &self.members.len())
            .finish()
    }
}

impl<O: DeserializeOwned> GroupHandle<O> {
    /// The handle of group `id` of `size` members, from any process.
    pub fn from_id(client: &Client, id: impl Into<String>, size: usize) -> Self {
        let id = id.into();
        GroupHandle {
            members: (0..size)
                .map(|i| WorkflowHandle::from_id(client, member_id(&id, i)))
                .collect(),
            id,
        }
    }

    /// The group's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Member `index`'s handle.
    pub fn member(&self, index: usize) -> Option<&WorkflowHandle<O>> {
        self.members.get(index)
    }

    /// Waits up to `timeout` (for all of them) for every member's result: the outputs in the
    /// members' order, or [`WorkflowError::Members`] listing those that failed (after waiting
    /// for all), or the first other error (a timeout, an expired result).
    pub async fn result(&self, timeout: Duration) -> Result<Vec<O>, WorkflowError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut outputs = Vec::with_capacity(self.members.len());
        let mut failures = Vec::new();
        for (index, member) in self.members.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match member.result(left).await {
                Ok(output) => outputs.push(output),
                Err(WorkflowError::Failed { task, error, .. }) => failures.push(MemberFailure {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    task,
                    error,
                }),
                Err(WorkflowError::Timeout(_)) => return Err(WorkflowError::Timeout(timeout)),
                Err(other) => return Err(other),
            }
        }
        if failures.is_empty() {
            Ok(outputs)
        } else {
            Err(WorkflowError::Members(failures))
        }
    }
}

/// The id of member `index` of group `group`.
pub(crate) fn member_id(group: &str, index: usize) -> String {
    format!("{group}-m{index}")
}
