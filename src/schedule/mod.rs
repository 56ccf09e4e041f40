//! Periodic jobs: a schedule that sends a message at each of its ticks.
//!
//! [`Queue::schedule`](crate::Queue::schedule) starts a thread that waits
//! on the queue's clock for each tick of a [`Schedule`] and sends the
//! message its function makes for that tick, with the idempotency key
//! `"<name>@<tick in ns since the epoch>"`. Ticks are fixed instants (an
//! interval ticks at every whole multiple of it since the Unix epoch, plus
//! an offset; a cron expression at its matching instants), so a tick has
//! the same key in every process and after every restart: a tick sent
//! twice — by a restarted process catching up, or by two schedules of the
//! same name — is a [`Sent::Duplicate`](crate::Sent::Duplicate) the second
//! time, within the queue's dedup window (5 minutes by default; a
//! persistent queue keeps the keys, and so what has fired, in its
//! write-ahead file). Keys are compared alone for these sends: a tick's
//! payload may differ between processes.
//!
//! **Missed ticks** are those that came due while no schedule of that
//! name was running (the process was down), or while its thread could
//! not run (the machine slept, a [`ManualClock`](crate::ManualClock)
//! jumped). Each schedule chooses ([`Missed`]):
//!
//! - [`Missed::Skip`] (the default): ticks due before the schedule started
//!   are never sent; of several that came due while it ran, only the
//!   latest is sent.
//! - [`Missed::CatchUp`]`(n)`: the latest `n` missed ticks are sent, in
//!   order, at start and after any gap, each under its own key, so those
//!   already sent are duplicates. At start, a schedule cannot tell a tick
//!   it missed from one that came before it was ever started: it sends the
//!   latest `n` ticks of the last dedup window (a tick at the start instant
//!   included), and those a previous run sent are duplicates. A catch-up
//!   looks back at most one dedup window: a key older than that may be
//!   forgotten, and its tick could fire twice.
//!
//! Sends do not block the thread on a full queue for ever: it tries again
//! every 10 ms until the message fits or the schedule stops. A send that
//! fails otherwise (a persistent queue's file failed) is counted in
//! [`ScheduleStats::failed`] and not retried; the thread ends when the
//! queue closes.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Schedule`], [`Missed`], [`Scheduled`], [`ScheduleStats`] |
//! | `ticks.rs` | when the ticks fall |
//! | `runner.rs` | the thread that waits for ticks and sends |
//! | `cron.rs` | cron expressions (feature `cron`) |

#[cfg(feature = "cron")]
mod cron;
mod runner;
mod ticks;

pub(crate) use runner::Runner;

use crate::clock::{self, Nanos};
use crate::producer::MAX_KEY_BYTES;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use ticks::Ticks;

/// When and how a periodic job is sent; start it with
/// [`Queue::schedule`](crate::Queue::schedule).
///
/// ```
/// use spool::{Missed, Queue, Schedule};
/// use std::time::{Duration, SystemTime};
///
/// let queue: Queue<SystemTime> = Queue::builder().open()?;
/// let hourly = Schedule::every("report", Duration::from_secs(3600))
///     .offset(Duration::from_secs(5 * 60)) // at :05 past each hour
///     .missed(Missed::CatchUp(1)); // after downtime, send the last missed one
/// let running = queue.schedule(hourly, |tick| tick)?;
/// # drop(running);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    ticks: Ticks,
    missed: Missed,
}

/// What a schedule does with ticks it missed; see the [module
/// docs](crate::Schedule) and [`Schedule::missed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Missed {
    /// Never send a tick that came due before the schedule started; of
    /// several that came due at once while it ran, send the latest only.
    #[default]
    Skip,
    /// Send the latest `n` missed ticks (within the dedup window), oldest
    /// first, at start and after any gap; those already sent are
    /// duplicates.
    CatchUp(usize),
}

/// Why a schedule was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// An interval of zero, or an offset not below the interval.
    #[error("a schedule needs a non-zero interval and an offset below it")]
    BadInterval,
    /// The name makes keys longer than [`MAX_KEY_BYTES`].
    #[error("schedule name of {len} bytes is too long for its keys (at most {max})")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The longest name accepted.
        max: usize,
    },
    /// The cron expression does not parse.
    #[error("bad cron expression {expression:?}: {reason}")]
    BadCron {
        /// What was given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue is closed.
    #[error("the queue is closed")]
    Closed,
    /// The schedule's thread could not be started.
    #[error("could not start the schedule's thread: {0}")]
    Spawn(String),
}

/// Room in a key for `@` and a tick's 20 digits.
const TICK_SUFFIX: usize = 21;

impl Schedule {
    /// Ticks every `interval` (at whole multiples of it since the Unix
    /// epoch, on the queue's clock: `Duration::from_secs(3600)` ticks on
    /// the hour, UTC). `name` names the schedule's keys: give each
    /// schedule of a queue its own.
    pub fn every(name: impl Into<String>, interval: Duration) -> Self {
        Schedule {
            name: name.into(),
            ticks: Ticks::Every {
                every: clock::duration_nanos(interval),
                offset: 0,
            },
            missed: Missed::Skip,
        }
    }

    /// Ticks at each instant that the cron expression matches, in UTC
    /// (the syntax of the [`croner`](https://docs.rs/croner) crate: five
    /// fields, or six with seconds first). Needs the `cron` feature.
    #[cfg(feature = "cron")]
    pub fn cron(name: impl Into<String>, expression: &str) -> Result<Self, ScheduleError> {
        Ok(Schedule {
            name: name.into(),
            ticks: Ticks::Cron(Box::new(cron::CronTicks::parse(expression)?)),
            missed: Missed::Skip,
        })
    }

    /// Moves an interval's ticks `offset` later (less than the interval):
    /// `every(1 h).offset(5 min)` ticks at five past each hour. No effect
    /// on a cron schedule.
    pub fn offset(mut self, offset: Duration) -> Self {
        #[allow(irrefutable_let_patterns)] // without the `cron` feature
        if let Ticks::Every { offset: at, .. } = &mut self.ticks {
            *at = clock::duration_nanos(offset);
        }
        self
    }

    /// What to do with missed ticks (default [`Missed::Skip`]).
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn validate(&self) -> Result<(), ScheduleError> {
        #[allow(irrefutable_let_patterns)] // without the `cron` feature
        if let Ticks::Every { every, offset } = self.ticks {
            if every == 0 || offset >= every {
                return Err(ScheduleError::BadInterval);
            }
        }
        let max = MAX_KEY_BYTES - TICK_SUFFIX;
        if self.name.len() > max {
            let len = self.name.len();
            return Err(ScheduleError::NameTooLong { len, max });
        }
        Ok(())
    }

    /// The idempotency key of the tick at `tick`.
    pub(crate) fn key(&self, tick: Nanos) -> String {
        format!("{}@{tick}", self.name)
    }
}

/// A running schedule, from [`Queue::schedule`](crate::Queue::schedule).
/// Dropping it (or [`stop`](Self::stop)) stops its thread; it also stops
/// once the queue is closed.
///
/// While it runs it holds a producer: the queue does not count as closed
/// because every other `Queue` and `Producer` handle is gone.
pub struct Scheduled {
    pub(crate) runner: Arc<dyn runner::Stop>,
    pub(crate) counts: Arc<Counts>,
    pub(crate) thread: Option<JoinHandle<()>>,
    pub(crate) name: String,
}

impl Scheduled {
    /// What the schedule has done so far.
    pub fn stats(&self) -> ScheduleStats {
        self.counts.read()
    }

    /// Stops the thread and waits for it (a send under way finishes
    /// first); returns the final counts.
    pub fn stop(mut self) -> ScheduleStats {
        self.end();
        self.stats()
    }

    fn end(&mut self) {
        self.runner.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.end();
    }
}

impl fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduled")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What a schedule has done, from [`Scheduled::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScheduleStats {
    /// Ticks whose message was enqueued by this schedule.
    pub sent: u64,
    /// Ticks found already sent (their key was taken: by an earlier run,
    /// or another schedule of the same name).
    pub duplicates: u64,
    /// Missed ticks left unsent by the [`Missed`] policy.
    pub skipped: u64,
    /// Ticks whose send failed (a persistent queue's file failed, the
    /// payload could not be encoded): not retried.
    pub failed: u64,
}

#[derive(Default)]
pub(crate) struct Counts {
    sent: AtomicU64,
    duplicates: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn read(&self) -> ScheduleStats {
        ScheduleStats {
            sent: self.sent.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}
