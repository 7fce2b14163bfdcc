//! The workflow builders and their submission: [`chain`], [`group`], [`chord`].
//!
//! Submitting declares, before anything runs, every step's task queue (with its task's
//! options), the result queue(s) and, for a chord, its results and token queues; then it
//! publishes (confirmed) the first step of each chain, carrying the rest in `x-lepus-chain`.
//! From there on the workers move the workflow along (`dispatch`, `chord_completion`): the
//! client may go away.

use std::marker::PhantomData;
use std::time::Duration;

use futures::TryStreamExt;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::client::Client;
use crate::envelope::CONTENT_TYPE;
use crate::error::{Error, Result};
use crate::task::enqueue::{self, close_side_channel, side_channel, Published};
use crate::task::headers;
use crate::task::result_wire::{RESULT_QUEUE, RESULT_TTL};
use crate::task::task_handle::{declare_result_queue, result_queue_name};
use crate::task::workflow::chord_completion::ChordToken;
use crate::task::workflow::flow_headers::{self, token_queue_of, CHORD_QUEUE_PART};
use crate::task::workflow::step::{Declare, Partial, Signature, Step};
use crate::task::workflow::workflow_handle::{member_id, GroupHandle, WorkflowHandle};
use crate::task::{Task, DEFAULT_RESULT_TTL};

/// A step as built: its arguments encoded, or why they do not encode (reported at submit).
type Built = std::result::Result<Step, String>;

/// How many step messages a submit keeps in flight (confirms pipelined on one channel).
const IN_FLIGHT: usize = 64;

/// Steps run one after the other, each step's output the next one's first argument; `O` is the
/// last step's output. Built by [`chain`] and [`Chain::then`]; a [`Signature`] is a chain of
/// one step.
pub struct Chain<O> {
    steps: Vec<Built>,
    declares: Vec<Declare>,
    result_ttl: Option<Duration>,
    output: PhantomData<fn() -> O>,
}

clone_for_any!(Chain<O> { steps, declares, result_ttl }, output);

impl<O> std::fmt::Debug for Chain<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("steps", &self.steps).finish()
    }
}

impl<T: Task> From<Signature<T>> for Chain<T::Output> {
    fn from(signature: Signature<T>) -> Self {
        Chain {
            steps: vec![signature.step],
            declares: vec![signature.declare],
            result_ttl: None,
            output: PhantomData,
        }
    }
}

/// A chain starting with `first` (a [`Signature`] or a chain); add steps with
/// [`Chain::then`].
pub fn chain<O>(first: impl Into<Chain<O>>) -> Chain<O> {
    first.into()
}

impl<O> Chain<O> {
    /// Appends `next`, which takes this chain's output as its first argument.
    pub fn then<U: Task>(mut self, next: Partial<U, O>) -> Chain<U::Output> {
        self.steps.push(next.step);
        self.declares.push(next.declare);
        Chain {
            steps: self.steps,
            declares: self.declares,
            result_ttl: self.result_ttl,
            output: PhantomData,
        }
    }

    /// Keeps the chain's result for `ttl` after its last use (default one day).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// Publishes the chain's first step (the others follow as each one succeeds); the handle's
    /// `result` gives the last step's output, or the failing step's error.
    pub async fn submit(self, client: &Client) -> Result<WorkflowHandle<O>>
    where
        O: serde::de::DeserializeOwned,
    {
        let id = new_id();
        let ttl_ms = ttl_ms(self.result_ttl);
        declare_tasks(client, &self.declares).await?;
        let queue = result_queue_name(client.queue_prefix(), &id);
        declare_result(client, &queue, ttl_ms).await?;
        let steps = prepared(client, self.steps, &id)?;
        publish_chain(client, &steps, result_carried(&queue, ttl_ms), None).await?;
        Ok(WorkflowHandle::from_id(client, id))
    }
}

/// Chains run in parallel; their results come back in order. Built by [`group`].
pub struct Group<O> {
    members: Vec<Chain<O>>,
    result_ttl: Option<Duration>,
}

clone_for_any!(Group<O> { members, result_ttl });

impl<O> std::fmt::Debug for Group<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("members", &self.members.len())
            .finish()
    }
}

/// A group of `members` (signatures or chains with the same output type).
pub fn group<O, M: Into<Chain<O>>>(members: impl IntoIterator<Item = M>) -> Group<O> {
    Group {
        members: members.into_iter().map(Into::into).collect(),
        result_ttl: None,
    }
}

impl<O> Group<O> {
    /// Keeps each member's result for `ttl` after its last use (default one day).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// The member count.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for a group without members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Publishes every member's first step; the handle collects their results in order.
    pub async fn submit(self, client: &Client) -> Result<GroupHandle<O>>
    where
        O: serde::de::DeserializeOwned,
    {
        let id = new_id();
        let ttl_ms = ttl_ms(self.result_ttl);
        let declares: Vec<Declare> = self
            .members
            .iter()
            .flat_map(|m| m.declares.iter().cloned())
            .collect();
        declare_tasks(client, &declares).await?;
        let size = self.members.len();
        let mut chains = Vec::with_capacity(size);
        for (index, chain) in self.members.into_iter().enumerate() {
            let member = member_id(&id, index);
            let queue = result_queue_name(client.queue_prefix(), &member);
            declare_result(client, &queue, ttl_ms).await?;
            chains.push((prepared(client, chain.steps, &member)?, queue));
        }
        futures::stream::iter(chains.iter().map(Ok))
            .try_for_each_concurrent(IN_FLIGHT, |(steps, queue)| {
                publish_chain(client, steps, result_carried(queue, ttl_ms), None)
            })
            .await?;
        Ok(GroupHandle::from_id(client, id, size))
    }
}

/// A group whose members' outputs, as a `Vec<O>` in order, are the callback's first argument
/// once every member succeeded; `R` is the callback chain's output. Built by [`chord`].
pub struct Chord<R> {
    /// Each member chain's steps and task queues.
    members: Vec<(Vec<Built>, Vec<Declare>)>,
    /// The callback chain; its `result_ttl` is the chord's.
    callback: Chain<R>,
}

impl<R> std::fmt::Debug for Chord<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chord")
            .field("members", &self.members.len())
            .field("callback", &self.callback.steps)
            .finish()
    }
}

/// The chord of `group` and `callback`: `callback` runs once, with the members' outputs in
/// order, after every member succeeded. If a member fails after its retries, the callback
/// does not run and the chord's result is [`WorkflowError::Members`](super::WorkflowError)
/// (see the module's failure rules).
pub fn chord<O, U: Task>(group: Group<O>, callback: Partial<U, Vec<O>>) -> Chord<U::Output> {
    Chord {
        members: group
            .members
            .into_iter()
            .map(|m| (m.steps, m.declares))
            .collect(),
        callback: Chain {
            steps: vec![callback.step],
            declares: vec![callback.declare],
            result_ttl: group.result_ttl,
            output: PhantomData,
        },
    }
}

impl<R> Chord<R> {
    /// Appends `next` to the callback chain.
    pub fn then<U: Task>(self, next: Partial<U, R>) -> Chord<U::Output> {
        Chord {
            members: self.members,
            callback: self.callback.then(next),
        }
    }

    /// Keeps the chord's state and result for `ttl` after their last use (default one day).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.callback = self.callback.result_ttl(ttl);
        self
    }

    /// Declares the chord's queues, publishes its token and every member's first step.
    pub async fn submit(self, client: &Client) -> Result<WorkflowHandle<R>>
    where
        R: serde::de::DeserializeOwned,
    {
        let id = new_id();
        let ttl_ms = ttl_ms(self.callback.result_ttl);
        let mut declares = self.callback.declares;
        for (_, member) in &self.members {
            declares.extend(member.iter().cloned());
        }
        declare_tasks(client, &declares).await?;
        let result_queue = result_queue_name(client.queue_prefix(), &id);
        declare_result(client, &result_queue, ttl_ms).await?;
        let callback = prepared(client, self.callback.steps, &format!("{id}-cb"))?;
        let size = u32::try_from(self.members.len())
            .map_err(|_| Error::Config("a chord has at most 2^32 - 1 members".into()))?;
        if size == 0 {
            // Nothing to wait for: the callback runs with an empty list.
            let first = callback_with_empty_list(&callback)?;
            publish_chain(client, &first, result_carried(&result_queue, ttl_ms), None).await?;
            return Ok(WorkflowHandle::from_id(client, id));
        }
        let chord_queue = format!("{}{CHORD_QUEUE_PART}{id}", client.queue_prefix());
        let token = ChordToken {
            size,
            callback,
            result_queue,
            result_ttl: ttl_ms,
        };
        let channel = side_channel(client).await?;
        let declared = async {
            declare_result_queue(&channel, &chord_queue, ttl_ms, false).await?;
            declare_result_queue(&channel, &token_queue_of(&chord_queue), ttl_ms, false).await
        }
        .await;
        close_side_channel(channel).await;
        declared?;
        let mut body = Vec::new();
        crate::envelope::encode_into(&mut body, &token).map_err(Error::Encode)?;
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(format!("{id}-token").into());
        confirmed(client, &token_queue_of(&chord_queue), &body, properties).await?;
        let mut chains = Vec::with_capacity(self.members.len());
        for (index, (steps, _)) in self.members.into_iter().enumerate() {
            chains.push(prepared(client, steps, &member_id(&id, index))?);
        }
        let chord_queue = chord_queue.as_str();
        futures::stream::iter(chains.iter().enumerate().map(Ok))
            .try_for_each_concurrent(IN_FLIGHT, |(index, steps)| {
                let mut carried = FieldTable::default();
                // Proof: index < size, which fits u32 (checked above).
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                flow_headers::chord_headers(&mut carried, chord_queue, index, size);
                publish_chain(client, steps, carried, None)
            })
            .await?;
        Ok(WorkflowHandle::from_id(client, id))
    }
}

/// The callback chain with its first step's list argument set to `[]` (a chord of nothing).
fn callback_with_empty_list(callback: &[Step]) -> Result<Vec<Step>> {
    let mut steps = callback.to_vec();
    if let Some(first) = steps.first_mut() {
        first.args = first.body(Some(&[0x90])).map_err(Error::Config)?;
        first.partial = false;
    }
    Ok(steps)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn ttl_ms(ttl: Option<Duration>) -> i64 {
    crate::envelope::millis(ttl.unwrap_or(DEFAULT_RESULT_TTL))
}

/// The steps with the client's prefix on their queues and ids `<id>-<k>`.
fn prepared(client: &Client, steps: Vec<Built>, id: &str) -> Result<Vec<Step>> {
    steps
        .into_iter()
        .enumerate()
        .map(|(k, step)| {
            let mut step = step.map_err(Error::Config)?;
            step.queue = format!("{}{}", client.queue_prefix(), step.queue);
            step.id = format!("{id}-{k}");
            Ok(step)
        })
        .collect()
}

fn result_carried(queue: &str, ttl_ms: i64) -> FieldTable {
    let mut carried = FieldTable::default();
    carried.insert(RESULT_QUEUE.into(), headers::long_string(queue));
    carried.insert(RESULT_TTL.into(), AMQPValue::LongLongInt(ttl_ms));
    carried
}

/// Declares each distinct task queue once (as `enqueue` does).
async fn declare_tasks(client: &Client, declares: &[Declare]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for declare in declares {
        if seen.insert(declare.queue.as_str()) {
            let queue = format!("{}{}", client.queue_prefix(), declare.queue);
            enqueue::ensure_queue(client, &queue, &declare.options).await?;
        }
    }
    Ok(())
}

async fn declare_result(client: &Client, queue: &str, ttl_ms: i64) -> Result<()> {
    let channel = side_channel(client).await?;
    let declared = declare_result_queue(&channel, queue, ttl_ms, false).await;
    close_side_channel(channel).await;
    Ok(declared?)
}

/// Publishes a chain's first step, the rest in its headers.
async fn publish_chain(
    client: &Client,
    steps: &[Step],
    carried: FieldTable,
    previous: Option<&[u8]>,
) -> Result<()> {
    let Some((first, rest)) = steps.split_first() else {
        return Err(Error::Config("a workflow chain has no steps".into()));
    };
    let body = first.body(previous).map_err(Error::Config)?;
    let table = flow_headers::step_headers(first, rest, &carried).map_err(Error::Config)?;
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(first.id.as_str().into())
        .with_timestamp(u64::try_from(headers::now_ms() / 1000).unwrap_or_default())
        .with_headers(table);
    confirmed(client, &first.queue, &body, properties).await
}

/// One confirmed publish on the client's publishing channel.
async fn confirmed(
    client: &Client,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<()> {
    match enqueue::publish_confirmed(client, queue, body, properties).await? {
        Published::Confirmed => Ok(()),
        Published::Returned(reply_code, _) => Err(Error::NoRoute {
            queue: queue.to_owned(),
            reply_code,
        }),
    }
}
