//! Periodic tasks: a [`Schedule`] fires a task on a cron schedule, in a time zone; a
//! [`Scheduler`] runs schedules, and any number of processes may run the same schedules while
//! exactly one fires each of them.
//!
//! # One process fires, the others stand by
//! The broker elects the firing process: each schedule has a lock, the exclusive queue
//! `lepus.schedule.<name>.lock` (see `lock`). Only one connection can hold it. The holder also
//! consumes the queue `lepus.schedule.<name>.holder`; every [`Scheduler::failover_poll`]
//! (default [`DEFAULT_FAILOVER_POLL`], 500 ms) each standby declares that queue, which reports
//! its consumer count, and tries the lock only when nobody consumes it (a refused try is a
//! channel error, which brokers log; a live holder so causes none). When the holder dies its
//! connection closes, the broker drops its lock and its consumer, and a standby takes the
//! lock at its next poll. So the **failover time** is at most the poll interval after the broker
//! noticed the holder's connection is gone: at once for a process that was killed or exited
//! (its kernel closes the socket), after the heartbeat timeout (60 s by default) for a host
//! that vanished from the network.
//!
//! # No tick fired twice
//! The last tick fired is kept in the durable queue `lepus.schedule.<name>`: one persistent
//! message, which the holder reads (`basic.get`) and keeps unacknowledged. Firing tick `t` is
//! one AMQP transaction on the holder's channel: publish the task, publish the new state `t`,
//! ack the old state, `tx.commit`. Either all of it happens or none; a holder that dies before
//! its commit fired nothing, and its unacked state goes back to the queue for the next holder;
//! one whose connection the broker already closed cannot commit. The next holder starts after
//! the last tick committed. (RabbitMQ's transactions are atomic per queue and are not undone by
//! a broker crash in the middle of a commit; on a broker failure a tick may so fire twice or
//! not at all. The fired task's `message_id` is `<schedule>@<tick in Unix ms>`, for
//! deduplication.)
//!
//! # Missed ticks
//! Ticks that passed while no process held the lock (failover, every process down) follow the
//! schedule's [`Missed`] policy: [`Missed::FireOnce`] (default) fires the latest missed tick
//! once, late, and skips the earlier ones; [`Missed::Skip`] fires none of them. A schedule
//! seen for the first time starts from now (no tick from the past).
//!
//! # Clocks
//! Ticks are computed from the firing process's wall clock: run the processes with synchronized
//! clocks (NTP). A tick id is the tick's scheduled time, so two processes with a clock skew
//! still never fire the same tick twice; the skew only moves when it fires.
//!
//! # Layout
//! - `cron_schedule`: [`Schedule`], [`Missed`]: what fires when.
//! - `scheduler`: [`Scheduler`], [`SchedulerHandle`]: the election and the firing loop.

mod cron_schedule;
mod scheduler;

pub use cron_schedule::{Missed, Schedule, ScheduleError};
pub use scheduler::{Scheduler, SchedulerHandle, DEFAULT_FAILOVER_POLL};

/// The header of a fired task: the schedule's name.
pub const HEADER_SCHEDULE: &str = "x-lepus-schedule";
/// The header of a fired task: the tick's scheduled time (Unix ms).
pub const HEADER_TICK: &str = "x-lepus-tick";
/// The header of a fired task: the id of the scheduler that fired it (`<host>:<pid>:<n>`).
pub const HEADER_SCHEDULER: &str = "x-lepus-scheduler";
