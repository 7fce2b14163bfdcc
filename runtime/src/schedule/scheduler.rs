//! [`Scheduler`]: runs schedules, competing with every other process that runs them (see the
//! module documentation of `schedule` for the election, the transaction and the failover).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::amqp::declare_durable;
use crate::connection::{Connection, Link};
use crate::envelope::{CONTENT_TYPE, HEADER_METHOD};
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::schedule::{Missed, Schedule, HEADER_SCHEDULE, HEADER_SCHEDULER, HEADER_TICK};
use crate::task::headers::{self, now_ms, ENQUEUED_AT};

/// How often a standby scheduler tries to take a schedule's lock.
pub const DEFAULT_FAILOVER_POLL: Duration = Duration::from_millis(500);

/// The most state messages a holder reads (there is one; more only after a broker failure).
const MAX_STATES: usize = 1_000;

/// Counts the schedulers of this process (for their ids).
static SCHEDULERS: AtomicU32 = AtomicU32::new(0);

/// The state message of a schedule (a MessagePack map).
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The last tick fired (Unix ms).
    tick_ms: i64,
    /// The scheduler that fired it.
    by: String,
}

/// Runs [`Schedule`]s on a connection; run one in every process that may fire them.
#[derive(Debug)]
pub struct Scheduler {
    conn: Connection,
    schedules: Vec<Schedule>,
    poll: Duration,
    prefix: String,
}

/// A scheduler started with [`Scheduler::spawn`]; dropping it stops the scheduler.
#[derive(Debug)]
pub struct SchedulerHandle {
    /// The scheduler's stop signal; the receivers are its schedule loops.
    stop: watch::Sender<bool>,
    /// The scheduler's task.
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl SchedulerHandle {
    /// Stops the scheduler: each schedule it fires is handed over (its lock released at once).
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.send_replace(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Err(Error::Closed)),
            None => Ok(()),
        }
    }
}

impl Scheduler {
    /// A scheduler on `conn` with no schedule yet.
    pub fn new(conn: &Connection) -> Self {
        Scheduler {
            conn: conn.clone(),
            schedules: Vec::new(),
            poll: DEFAULT_FAILOVER_POLL,
            prefix: String::new(),
        }
    }

    /// Adds a schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    setters! {
        /// How often a standby tries to take over (default [`DEFAULT_FAILOVER_POLL`]): the bound on
        /// the failover time once the broker dropped the dead holder's connection.
        failover_poll(poll: Duration) => poll = poll.max(Duration::from_millis(10));

        /// Prepends `prefix` to the task queues and to the schedules' lock and state queues (as
        /// [`Worker::queue_prefix`](crate::Worker::queue_prefix) does).
        queue_prefix(prefix: impl Into<String>) => prefix = prefix.into();
    }

    /// Starts the scheduler in a task of its own.
    pub fn spawn(self) -> SchedulerHandle {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(self.run_with(stopped));
        SchedulerHandle {
            stop,
            task: Some(task),
        }
    }

    /// Runs until `shutdown` completes, then hands over what it fires.
    pub async fn run_until<F: Future>(self, shutdown: F) -> Result<()> {
        let (stop, stopped) = watch::channel(false);
        let run = self.run_with(stopped);
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => return result,
            _ = shutdown => {}
        }
        stop.send_replace(true);
        run.await
    }

    async fn run_with(self, stop: watch::Receiver<bool>) -> Result<()> {
        if self.schedules.is_empty() {
            return Err(Error::Config("the scheduler has no schedule".into()));
        }
        let n = SCHEDULERS.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!(
            "{}:{}:{n}",
            crate::control::registry::host_name(),
            std::process::id()
        );
        // One loop per schedule, each owned here: they end on the stop signal.
        let mut loops = JoinSet::new();
        for schedule in self.schedules {
            loops.spawn(run_schedule(
                self.conn.clone(),
                Arc::new(schedule),
                self.prefix.clone(),
                self.poll,
                id.clone(),
                stop.clone(),
            ));
        }
        while loops.join_next().await.is_some() {}
        Ok(())
    }
}

/// Waits for the stop signal.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Competes for one schedule's lock and fires it while holding it, through reconnections,
/// until the stop signal.
async fn run_schedule(
    conn: Connection,
    schedule: Arc<Schedule>,
    prefix: String,
    poll: Duration,
    id: String,
    mut stop: watch::Receiver<bool>,
) {
    let lock_name = format!("{prefix}lepus.schedule.{}.lock", schedule.name);
    let presence_name = format!("{prefix}lepus.schedule.{}.holder", schedule.name);
    let mut after = 0;
    loop {
        let Some(link) = conn.link_until(after, &mut stop).await else {
            return;
        };
        // Standing by: every `poll`, look whether the holder is there (it consumes the
        // presence queue), and only when it is not, try the lock (a refused try is a channel
        // error, which brokers log: not done while a holder is alive).
        let mut probe: Option<lapin::Channel> = None;
        let lock = loop {
            match holder_present(&link, &mut probe, &presence_name).await {
                Ok(true) => {}
                Ok(false) => match Lock::try_take(&link.conn, &lock_name).await {
                    Ok(Some(lock)) => break Some(lock),
                    Ok(None) => {}
                    Err(err) => {
                        debug!(schedule = %schedule.name, cause = %err, "cannot try the schedule's lock");
                        break None;
                    }
                },
                Err(err) => {
                    debug!(schedule = %schedule.name, cause = %err, "cannot look for the schedule's holder");
                    break None;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = stopped(&mut stop) => return,
            }
        };
        if let Some(probe) = probe.take() {
            if probe.status().connected() {
                let _ = probe.close(200, "probe done".into()).await;
            }
        }
        if let Some(lock) = lock {
            info!(schedule = %schedule.name, scheduler = %id, "this process fires the schedule");
            let result = match link.conn.create_channel().await {
                Ok(channel) => {
                    let holder = Holder {
                        link: &link,
                        channel: &channel,
                        schedule: &schedule,
                        prefix: &prefix,
                        id: &id,
                        presence: &presence_name,
                    };
                    let result = tokio::select! {
                        result = holder.fire() => result,
                        () = stopped(&mut stop) => Ok(()),
                    };
                    // Closing the channel hands the unacked state back before the lock goes.
                    if channel.status().connected() {
                        let _ = channel.close(200, "schedule handed over".into()).await;
                    }
                    result
                }
                Err(err) => Err(err),
            };
            lock.release().await;
            if let Err(err) = result {
                warn!(schedule = %schedule.name, cause = %err, "lost the schedule; standing by again");
            }
            if *stop.borrow() {
                return;
            }
        }
        after = if link.conn.status().connected() {
            tokio::time::sleep(poll).await;
            link.generation - 1
        } else {
            link.generation
        };
    }
}

/// Declares the presence queue of a schedule: the holder consumes it, standbys count its
/// consumers. Not exclusive (anyone may declare it), not auto-deleted (it stays between
/// holders).
async fn declare_presence(channel: &lapin::Channel, presence: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            presence.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// True when some process consumes the presence queue (the holder, alive). `probe` is the
/// standby's channel, opened on first use and kept across polls.
async fn holder_present(
    link: &Link,
    probe: &mut Option<lapin::Channel>,
    presence: &str,
) -> lapin::Result<bool> {
    if probe.as_ref().is_none_or(|c| !c.status().connected()) {
        *probe = Some(link.conn.create_channel().await?);
    }
    match probe.as_ref() {
        Some(channel) => Ok(declare_presence(channel, presence).await?.consumer_count() > 0),
        None => Ok(false),
    }
}

/// The process holding a schedule's lock.
struct Holder<'a> {
    link: &'a Link,
    channel: &'a lapin::Channel,
    schedule: &'a Schedule,
    prefix: &'a str,
    id: &'a str,
    /// The presence queue the holder consumes while it holds the lock.
    presence: &'a str,
}

impl Holder<'_> {
    /// Reads the state and fires each tick in a transaction, until the channel fails (or the
    /// schedule has no more ticks: then it holds the lock idle).
    async fn fire(&self) -> lapin::Result<()> {
        let schedule = self.schedule;
        let channel = self.channel;
        let state_queue = format!("{}lepus.schedule.{}", self.prefix, schedule.name);
        let task_queue = format!("{}{}", self.prefix, schedule.queue);
        declare_durable(channel, state_queue.as_str(), FieldTable::default()).await?;
        channel
            .queue_declare(
                task_queue.as_str().into(),
                schedule.queue_options.declare_options(),
                schedule.queue_options.arguments(),
            )
            .await?;
        // Standbys see this consumer (and so leave the lock alone) until our connection closes.
        declare_presence(channel, self.presence).await?;
        let _present = channel
            .basic_consume(
                self.presence.into(),
                "".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..lapin::options::BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel.tx_select().await?;
        // The last tick fired, and the state messages held (acked by the next commit).
        let (mut held, last) = self.read_state(&state_queue).await?;
        let mut last = match last {
            Some(tick) => tick,
            None => now_ms(),
        };
        debug!(schedule = %schedule.name, last, link = self.link.generation, "schedule state read");
        loop {
            let Some(next) = schedule.next_after(last) else {
                // The expression has no more ticks (a year field in the past).
                std::future::pending::<()>().await;
                return Ok(());
            };
            let now = now_ms();
            let tick = if next <= now {
                let latest = schedule.latest_until(now).unwrap_or(next).max(next);
                match schedule.missed {
                    Missed::FireOnce => {
                        info!(schedule = %schedule.name, missed_from = next, firing = latest, "missed ticks: firing the latest once");
                        latest
                    }
                    Missed::Skip => {
                        info!(schedule = %schedule.name, missed_from = next, up_to = latest, "missed ticks skipped");
                        last = latest;
                        continue;
                    }
                }
            } else {
                let wait = u64::try_from(next - now).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                next
            };
            self.publish_tick(&task_queue, &state_queue, tick).await?;
            for tag in held.drain(..) {
                channel.basic_ack(tag, BasicAckOptions::default()).await?;
            }
            channel.tx_commit().await?;
            debug!(schedule = %schedule.name, tick, "tick fired");
            last = tick;
            let (now_held, _) = self.read_state(&state_queue).await?;
            held = now_held;
        }
    }

    /// Takes every state message (unacked) and returns their delivery tags and the latest tick.
    async fn read_state(&self, state_queue: &str) -> lapin::Result<(Vec<u64>, Option<i64>)> {
        let mut tags = Vec::new();
        let mut last: Option<i64> = None;
        for _ in 0..MAX_STATES {
            let Some(got) = self
                .channel
                .basic_get(state_queue.into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            tags.push(got.delivery.delivery_tag);
            match crate::envelope::decode_request::<State>(&got.delivery.data) {
                Ok(state) => last = Some(last.map_or(state.tick_ms, |l| l.max(state.tick_ms))),
                Err(err) => warn!(cause = %err, "undecodable schedule state dropped"),
            }
        }
        Ok((tags, last))
    }

    /// Publishes the task of `tick` and the new state (inside the open transaction).
    async fn publish_tick(
        &self,
        task_queue: &str,
        state_queue: &str,
        tick: i64,
    ) -> lapin::Result<()> {
        let schedule = self.schedule;
        let now = now_ms();
        let mut task_headers = FieldTable::default();
        task_headers.insert(HEADER_METHOD.into(), headers::long_string(schedule.task));
        headers::insert_int(&mut task_headers, ENQUEUED_AT, now);
        task_headers.insert(HEADER_SCHEDULE.into(), headers::long_string(&schedule.name));
        headers::insert_int(&mut task_headers, HEADER_TICK, tick);
        task_headers.insert(HEADER_SCHEDULER.into(), headers::long_string(self.id));
        let message_id = format!("{}@{tick}", schedule.name);
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(message_id.as_str().into())
            .with_timestamp(u64::try_from(now / 1000).unwrap_or_default())
            .with_headers(task_headers);
        self.channel
            .basic_publish(
                "".into(),
                task_queue.into(),
                BasicPublishOptions::default(),
                &schedule.body,
                properties,
            )
            .await?;
        let state = State {
            tick_ms: tick,
            by: self.id.to_owned(),
        };
        // Proof: a struct of an integer and a string always encodes.
        let body = rmp_serde::to_vec_named(&state).unwrap_or_default();
        self.channel
            .basic_publish(
                "".into(),
                state_queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type(CONTENT_TYPE.into())
                    .with_delivery_mode(2),
            )
            .await?;
        Ok(())
    }
}
