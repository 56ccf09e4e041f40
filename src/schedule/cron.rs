//! Cron expressions for schedules (feature `cron`), evaluated in UTC by
//! the croner crate. A tick is an instant the expression matches, at a
//! whole second.

use super::ScheduleError;
use crate::clock::Nanos;
use chrono::{DateTime, Utc};
use croner::Cron;
use std::str::FromStr;

#[derive(Debug, Clone)]
pub(crate) struct CronTicks(Cron);

impl CronTicks {
    pub(crate) fn parse(expression: &str) -> Result<Self, ScheduleError> {
        Cron::from_str(expression)
            .map(CronTicks)
            .map_err(|error| ScheduleError::BadCron {
                expression: expression.to_owned(),
                reason: error.to_string(),
            })
    }

    /// The first matching instant strictly after `t`.
    pub(crate) fn next_after(&self, t: Nanos) -> Option<Nanos> {
        let at = DateTime::<Utc>::from_timestamp_nanos(i64::try_from(t).ok()?);
        let next = self.0.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp_nanos_opt()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn ticks_fall_on_the_matching_instants() {
        let every_5_min = CronTicks::parse("*/5 * * * *").unwrap();
        // 2025-01-01 00:00:00 UTC.
        let start = 1_735_689_600 * SEC;
        assert_eq!(every_5_min.next_after(start), Some(start + 300 * SEC));
        assert_eq!(every_5_min.next_after(start + 1), Some(start + 300 * SEC));
        let seconds = CronTicks::parse("*/10 * * * * *").unwrap();
        assert_eq!(seconds.next_after(start), Some(start + 10 * SEC));
        assert!(matches!(
            CronTicks::parse("not cron"),
            Err(ScheduleError::BadCron { .. })
        ));
    }
}
