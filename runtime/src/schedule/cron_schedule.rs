//! [`Schedule`]: a task, its arguments, a cron expression and a time zone; [`Missed`]: what to
//! do with ticks nobody fired.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;

use crate::envelope;
use crate::task::Task;
use crate::worker::QueueOptions;

/// What happens to ticks that passed while no scheduler could fire them (see the module
/// documentation of `schedule`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Missed {
    /// Fire the latest missed tick once, late (the earlier ones are skipped). The default: a
    /// failover shorter than the schedule's period loses no tick.
    #[default]
    FireOnce,
    /// Fire none of them; go on with the next tick to come.
    Skip,
}

/// Why a schedule cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The expression.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone {0:?} (expected an IANA name such as \"Europe/Paris\")")]
    TimeZone(String),
    /// The name is empty or longer than 200 bytes (it names queues).
    #[error("invalid schedule name {0:?}: 1 to 200 bytes")]
    Name(String),
    /// The arguments do not encode.
    #[error("cannot encode the arguments: {0}")]
    Args(String),
}

/// A task fired on a cron schedule. Build it with [`Schedule::task`], run it with a
/// [`Scheduler`](crate::schedule::Scheduler).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(crate) name: String,
    pub(crate) cron: cron::Schedule,
    pub(crate) tz: Tz,
    pub(crate) missed: Missed,
    /// The task queue (without the scheduler's prefix).
    pub(crate) queue: String,
    pub(crate) queue_options: QueueOptions,
    pub(crate) task: &'static str,
    /// The arguments, MessagePack-encoded as an enqueue would.
    pub(crate) body: Vec<u8>,
}

impl Schedule {
    /// Fires task `T` with `args` at every tick of `cron`, evaluated in UTC (see
    /// [`Schedule::time_zone`]). `name` identifies the schedule across processes: every process
    /// running a schedule of that name competes to fire it. `cron` has six or seven fields:
    /// `sec min hour day-of-month month day-of-week [year]`, e.g. `"0 30 9 * * Mon-Fri"`
    /// (9:30 on weekdays), `"*/10 * * * * *"` (every 10 s).
    pub fn task<T: Task>(
        name: impl Into<String>,
        cron: &str,
        args: T::Args,
    ) -> Result<Schedule, ScheduleError> {
        let name = name.into();
        if name.is_empty() || name.len() > 200 {
            return Err(ScheduleError::Name(name));
        }
        let parsed = cron::Schedule::from_str(cron).map_err(|e| ScheduleError::Cron {
            expression: cron.to_owned(),
            reason: e.to_string(),
        })?;
        let body =
            envelope::encode_request(&args).map_err(|e| ScheduleError::Args(e.to_string()))?;
        Ok(Schedule {
            name,
            cron: parsed,
            tz: Tz::UTC,
            missed: Missed::default(),
            queue: T::QUEUE.to_owned(),
            queue_options: T::options().queue_options(),
            task: T::NAME,
            body,
        })
    }

    /// Evaluates the cron expression in time zone `tz` (an IANA name: `"Europe/Paris"`), so
    /// that `"0 0 9 * * *"` fires at 9:00 local time through daylight-saving changes.
    pub fn time_zone(mut self, tz: &str) -> Result<Schedule, ScheduleError> {
        self.tz = tz
            .parse::<Tz>()
            .map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        Ok(self)
    }

    /// What to do with ticks nobody fired (default [`Missed::FireOnce`]).
    pub fn missed(mut self, missed: Missed) -> Schedule {
        self.missed = missed;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first tick after `after` (Unix ms), in Unix ms.
    pub(crate) fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = self.at(after_ms)?;
        self.cron
            .after(&after)
            .next()
            .map(|tick| tick.timestamp_millis())
    }

    /// The latest tick at or before `now` (Unix ms), in Unix ms.
    pub(crate) fn latest_until(&self, now_ms: i64) -> Option<i64> {
        // `after(t)` starts strictly after `t`; one millisecond later includes `now` itself.
        let after = self.at(now_ms.saturating_add(1))?;
        self.cron
            .after(&after)
            .next_back()
            .map(|tick| tick.timestamp_millis())
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        self.tz.timestamp_millis_opt(ms).single()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    struct Tick;

    impl Task for Tick {
        const QUEUE: &'static str = "ticks";
        const NAME: &'static str = "tick";
        type Args = ();
        type Err = String;
        type Output = ();

        fn options() -> crate::TaskOptions {
            crate::TaskOptions::new()
        }

        fn encode_output(_: &()) -> Option<Vec<u8>> {
            None
        }

        fn decode_output(_: &[u8]) -> Result<(), String> {
            Ok(())
        }

        fn encode_error(_: &String) -> Option<Vec<u8>> {
            None
        }

        fn decode_error(body: &[u8]) -> Result<String, String> {
            Ok(String::from_utf8_lossy(body).into_owned())
        }

        fn invoke(
            _: (),
            _: &crate::Context,
        ) -> Result<
            impl std::future::Future<Output = Result<(), String>> + Send + 'static,
            crate::state::MissingState,
        > {
            Ok(async { Ok(()) })
        }
    }

    #[test]
    fn ticks_follow_the_expression_in_its_time_zone() {
        let every_second = Schedule::task::<Tick>("t", "* * * * * *", ()).unwrap();
        assert_eq!(every_second.next_after(1_000), Some(2_000));
        assert_eq!(every_second.next_after(1_500), Some(2_000));
        assert_eq!(every_second.latest_until(2_000), Some(2_000));
        assert_eq!(every_second.latest_until(2_999), Some(2_000));
        // 9:00 in Paris is 8:00 UTC in winter (2026-01-05 is a Monday).
        let paris = Schedule::task::<Tick>("p", "0 0 9 * * *", ())
            .unwrap()
            .time_zone("Europe/Paris")
            .unwrap();
        let jan_5_midnight_utc = 1_767_571_200_000;
        assert_eq!(
            paris.next_after(jan_5_midnight_utc),
            Some(jan_5_midnight_utc + 8 * 3_600_000)
        );
        assert!(matches!(
            Schedule::task::<Tick>("x", "every second", ()),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            paris.time_zone("Mars/Olympus"),
            Err(ScheduleError::TimeZone(_))
        ));
        assert!(Schedule::task::<Tick>("", "* * * * * *", ()).is_err());
    }
}
