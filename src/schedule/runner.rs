//! The thread of a running schedule.
//!
//! It keeps `seen`, the instant up to which it has dealt with every tick.
//! Each round it reads the queue's clock, sends what the [`Missed`] policy
//! keeps of the ticks in `(seen, now]`, moves `seen` to `now`, and sleeps
//! until the next tick. The sleep is in real time, as long as the queue's
//! clock says is left; a clock that jumps (a
//! [`ManualClock`](crate::ManualClock)) wakes it through the clock's
//! waker, and [`Stop::stop`] wakes it too. The clock is read under the
//! lock the sleep waits on, and the wakers take that lock before they
//! notify, so no jump or stop is missed between the reading and the
//! sleep.

use super::{Counts, Missed, Schedule, ScheduleError, Scheduled};
use crate::clock::{self, ClockListener, ClockWaker, Nanos};
use crate::error::SendError;
use crate::producer::{Producer, SendOptions, Sent};
use crate::Message;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the thread waits before trying a full queue again.
const FULL_RETRY: Duration = Duration::from_millis(10);

/// Stops a running schedule (what [`Scheduled`] holds of it).
pub(crate) trait Stop: Send + Sync {
    fn stop(&self);
}

pub(crate) struct Runner<T> {
    schedule: Schedule,
    producer: Producer<T>,
    make: Box<dyn Fn(SystemTime) -> T + Send + Sync>,
    counts: Arc<Counts>,
    /// How far back a catch-up may look: the queue's dedup window.
    window: Nanos,
    stopping: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl<T: Message> Runner<T> {
    /// Starts `schedule` on the queue `producer` sends to.
    pub(crate) fn start(
        schedule: Schedule,
        producer: Producer<T>,
        window: Duration,
        make: impl Fn(SystemTime) -> T + Send + Sync + 'static,
    ) -> Result<Scheduled, ScheduleError> {
        schedule.validate()?;
        if producer.is_closed() {
            return Err(ScheduleError::Closed);
        }
        let counts = Arc::new(Counts::default());
        let name = schedule.name.clone();
        let runner = Arc::new(Runner {
            schedule,
            producer,
            make: Box::new(make),
            counts: Arc::clone(&counts),
            window: clock::duration_nanos(window),
            stopping: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let listener: Arc<dyn ClockListener> = runner.clone();
        (runner.producer.clock()).register_waker(ClockWaker(Arc::downgrade(&listener)));
        let start = runner.producer.now();
        let thread = {
            let runner = Arc::clone(&runner);
            std::thread::Builder::new()
                .name(format!("spool-schedule-{name}"))
                .spawn(move || runner.run(start))
                .map_err(|e| ScheduleError::Spawn(e.to_string()))?
        };
        Ok(Scheduled {
            runner,
            counts,
            thread: Some(thread),
            name,
        })
    }

    fn run(&self, start: Nanos) {
        let mut seen = match self.schedule.missed {
            Missed::Skip => start,
            // At start, look back as far as the keys are remembered.
            Missed::CatchUp(_) => start.saturating_sub(self.window),
        };
        let mut guard = self.lock.lock();
        loop {
            if self.stopping.load(SeqCst) {
                return;
            }
            let now = self.producer.now();
            if now > seen {
                drop(guard);
                if !self.fire(seen, now) {
                    return; // the queue is closed
                }
                seen = now;
                guard = self.lock.lock();
                continue; // the clock may have moved meanwhile
            }
            let Some(next) = self.schedule.ticks.next_after(seen) else {
                return; // no tick before the end of time
            };
            let nap = Duration::from_nanos(next.saturating_sub(now));
            self.wake.wait_for(&mut guard, nap);
        }
    }

    /// Sends what the policy keeps of the ticks in `(seen, now]`; `false`
    /// once the queue is closed.
    fn fire(&self, seen: Nanos, now: Nanos) -> bool {
        let ticks = &self.schedule.ticks;
        let keep = match self.schedule.missed {
            Missed::Skip => 1,
            Missed::CatchUp(n) => n,
        };
        // Never further back than the dedup window.
        let after = seen.max(now.saturating_sub(self.window));
        let due = ticks.due(after, now, keep);
        let skipped = ticks.count(seen, now).saturating_sub(due.len() as u64);
        self.counts.skipped.fetch_add(skipped, Relaxed);
        due.into_iter().all(|tick| self.send(tick))
    }

    /// Sends the message of the tick at `tick`; `false` once the queue is
    /// closed or the schedule stops.
    fn send(&self, tick: Nanos) -> bool {
        let options = SendOptions::new()
            .key(self.schedule.key(tick))
            .any_payload();
        let mut message = (self.make)(clock::from_nanos(tick));
        loop {
            match self.producer.try_send_with(message, options.clone()) {
                Ok(Sent::Enqueued(_)) => Counts::bump(&self.counts.sent),
                Ok(Sent::Duplicate(_)) => Counts::bump(&self.counts.duplicates),
                Err(SendError::Full(back)) => {
                    let mut guard = self.lock.lock();
                    if self.stopping.load(SeqCst) {
                        return false;
                    }
                    self.wake.wait_for(&mut guard, FULL_RETRY);
                    message = back;
                    continue;
                }
                Err(SendError::Closed(_)) => return false,
                Err(_) => Counts::bump(&self.counts.failed),
            }
            return true;
        }
    }
}

impl Counts {
    fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

impl<T: Send + Sync> Stop for Runner<T> {
    fn stop(&self) {
        let guard = self.lock.lock();
        self.stopping.store(true, SeqCst);
        drop(guard);
        self.wake.notify_all();
    }
}

impl<T: Send + Sync> ClockListener for Runner<T> {
    fn clock_jumped(&self) {
        let guard = self.lock.lock();
        drop(guard);
        self.wake.notify_all();
    }
}
