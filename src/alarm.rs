//! Waking tasks at an instant, without a runtime.
//!
//! A thread blocked in a receive sleeps no later than the queue's next
//! deadline (a lease running out, a delay coming due) or its own timeout.
//! A task cannot sleep; it must be woken. Runtimes have timers, but each
//! its own, and the queue takes no runtime. So the process has one alarm
//! thread, started by the first task that needs it: it keeps the wake-up
//! instants in order, sleeps until the first, and wakes the tasks whose
//! instant has come. It never runs a task, only calls `Waker::wake`.
//!
//! An [`Alarm`] is one task's wake-up, kept across polls and cancelled
//! when dropped; setting it again to the same instant only refreshes the
//! waker. With a [`ManualClock`](crate::ManualClock) a queue's deadlines
//! come from moving the clock, which wakes every waiter itself: tasks then
//! set alarms only for the timeouts their callers gave, in real time.

use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::task::Waker;
use std::time::Instant;

/// The alarm thread's list.
struct Alarms {
    state: Mutex<State>,
    /// Wakes the alarm thread: a new first instant.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Wake-ups by instant, then by key (unique).
    due: BTreeMap<(Instant, u64), Waker>,
    next_key: u64,
    /// Whether the alarm thread was started (it then runs for good).
    started: bool,
}

impl Alarms {
    fn process() -> &'static Alarms {
        static ALARMS: OnceLock<Alarms> = OnceLock::new();
        ALARMS.get_or_init(|| Alarms {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// The alarm thread: wakes whatever is due, then sleeps until the next.
    fn run(&self) {
        let mut state = self.state.lock();
        loop {
            let now = Instant::now();
            let mut woken = Vec::new();
            while let Some(entry) = state.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                woken.push(entry.remove());
            }
            if !woken.is_empty() {
                // Wake outside the lock: a waker may poll at once (an
                // executor on this thread) and set an alarm.
                drop(state);
                woken.into_iter().for_each(Waker::wake);
                state = self.state.lock();
                continue;
            }
            match state.due.keys().next().map(|(at, _)| *at) {
                Some(at) => {
                    self.changed.wait_until(&mut state, at);
                }
                None => self.changed.wait(&mut state),
            }
        }
    }
}

/// One task's wake-up at an instant; cancelled on drop.
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    set: Option<(Instant, u64)>,
}

impl Alarm {
    /// Wakes `waker` at `at` (or at once if it has passed), instead of
    /// whatever this alarm was set to. `None` unsets it.
    pub(crate) fn set(&mut self, at: Option<Instant>, waker: &Waker) {
        if self.set.is_none() && at.is_none() {
            return;
        }
        let alarms = Alarms::process();
        let mut state = alarms.state.lock();
        if let Some(set) = self.set {
            if Some(set.0) == at {
                if let Some(listed) = state.due.get_mut(&set) {
                    if !listed.will_wake(waker) {
                        listed.clone_from(waker);
                    }
                    return;
                }
            }
            state.due.remove(&set);
            self.set = None;
        }
        let Some(at) = at else { return };
        let key = state.next_key;
        state.next_key += 1;
        let first = state.due.keys().next().is_none_or(|(next, _)| at < *next);
        state.due.insert((at, key), waker.clone());
        self.set = Some((at, key));
        if !state.started {
            state.started = true;
            let spawned = std::thread::Builder::new()
                .name("spool-alarm".into())
                .spawn(|| Alarms::process().run());
            if spawned.is_err() {
                // No thread to wake it: the task is woken at once, polls
                // again and sets the alarm again, so it keeps looking
                // for its instant rather than sleeping past it.
                state.started = false;
                state.due.remove(&(at, key));
                self.set = None;
                drop(state);
                waker.wake_by_ref();
                return;
            }
        }
        if first {
            alarms.changed.notify_one();
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if let Some(set) = self.set.take() {
            Alarms::process().state.lock().due.remove(&set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    struct Count(AtomicUsize, std::thread::Thread);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
            self.1.unpark();
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0), std::thread::current()));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn an_alarm_wakes_its_task_once_at_its_instant() {
        let (count, waker) = counting_waker();
        let mut alarm = Alarm::default();
        let at = Instant::now() + Duration::from_millis(20);
        alarm.set(Some(at), &waker);
        alarm.set(Some(at), &waker); // the same instant: still one wake-up
        let give_up = Instant::now() + Duration::from_secs(10);
        while count.0.load(SeqCst) == 0 && Instant::now() < give_up {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        assert!(Instant::now() >= at, "not before its instant");
        assert_eq!(count.0.load(SeqCst), 1);
    }

    /// Whether the alarm thread's list holds this wake-up.
    fn listed(set: Option<(Instant, u64)>) -> bool {
        set.is_some_and(|set| Alarms::process().state.lock().due.contains_key(&set))
    }

    #[test]
    fn a_moved_or_dropped_alarm_leaves_the_list() {
        // Far off, so that none rings while the test looks.
        let (_, waker) = counting_waker();
        let hour = Duration::from_secs(3600);
        let mut alarm = Alarm::default();
        alarm.set(Some(Instant::now() + hour), &waker);
        let first = alarm.set;
        assert!(listed(first));
        alarm.set(first.map(|(at, _)| at), &waker);
        assert_eq!(alarm.set, first, "the same instant keeps its place");
        alarm.set(Some(Instant::now() + 2 * hour), &waker);
        let moved = alarm.set;
        assert!(!listed(first) && listed(moved), "moved");
        alarm.set(None, &waker);
        assert!(!listed(moved) && alarm.set.is_none(), "unset");
        alarm.set(Some(Instant::now() + hour), &waker);
        let last = alarm.set;
        drop(alarm);
        assert!(!listed(last), "dropped");
    }
}
