//! Alerting on a burst of dead letters (or any other [`Event`]).
//!
//! A [`RateAlert`] keeps the times of the events it counts that are still
//! inside its sliding window, oldest first, in a `VecDeque`: each new event
//! first drops the times that have left the window (amortised O(1)), then
//! is added. Memory is one `u64` per counted event in the window.
//!
//! It fires on the edge: when the count in the window goes from below the
//! threshold to the threshold, once; it is armed again only after the
//! count has fallen back below the threshold. Counts only go up when an
//! event is observed, and falling back is seen at the next observation
//! (or query), so no crossing is missed or reported twice.

use crate::clock::{self, Clock, Nanos, SystemClock};
use crate::event::Event;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

type Callback = Arc<dyn Fn(&Alert) + Send + Sync>;
type Filter = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Fires when `threshold` events happen within a sliding `window`; by
/// default it counts [`Event::DeadLettered`].
///
/// Feed it from a queue's [`Builder::on_event`](crate::Builder::on_event)
/// with [`hook`](Self::hook) (several queues may feed one alert), then
/// react in [`on_fire`](Self::on_fire) or poll
/// [`is_firing`](Self::is_firing). An event counts while less than
/// `window` has passed since it, on the alert's [`Clock`].
///
/// ```
/// use spool::{ManualClock, Queue, RateAlert};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let pages = Arc::new(AtomicUsize::new(0));
/// let paged = pages.clone();
/// let alert = RateAlert::new(2, Duration::from_secs(60))
///     .clock(clock.clone())
///     .on_fire(move |alert| {
///         eprintln!("{} dead letters in {:?}", alert.count, alert.window);
///         paged.fetch_add(1, Ordering::SeqCst);
///     });
/// let queue: Queue<u32> = Queue::builder().on_event(alert.hook()).open()?;
///
/// queue.producer().send(1)?;
/// queue.producer().send(2)?;
/// queue.consumer().try_recv()?.dead_letter("corrupt")?;
/// clock.advance(Duration::from_secs(30));
/// queue.consumer().try_recv()?.dead_letter("corrupt")?;
/// assert_eq!(pages.load(Ordering::SeqCst), 1);
/// assert!(alert.is_firing());
/// clock.advance(Duration::from_secs(30)); // the first one leaves the window
/// assert_eq!(alert.count(), 1);
/// assert!(!alert.is_firing());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RateAlert {
    threshold: usize,
    window: Duration,
    clock: Arc<dyn Clock>,
    counts: Filter,
    on_fire: Option<Callback>,
    state: Arc<Mutex<State>>,
}

struct State {
    /// Times of the counted events still in the window, oldest first.
    times: VecDeque<Nanos>,
    armed: bool,
    fired: u64,
}

/// What a [`RateAlert`] reports when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alert {
    /// Events counted within the window, the one that fired it included.
    pub count: usize,
    /// The alert's threshold.
    pub threshold: usize,
    /// The alert's window.
    pub window: Duration,
    /// When it fired, on the alert's clock.
    pub at: SystemTime,
}

impl RateAlert {
    /// An alert that fires when `threshold` dead letters (at least 1) are
    /// counted within `window`, on the [`SystemClock`].
    pub fn new(threshold: usize, window: Duration) -> Self {
        RateAlert {
            threshold: threshold.max(1),
            window,
            clock: Arc::new(SystemClock::new()),
            counts: Arc::new(|event| matches!(event, Event::DeadLettered { .. })),
            on_fire: None,
            state: Arc::new(Mutex::new(State {
                times: VecDeque::new(),
                armed: true,
                fired: 0,
            })),
        }
    }

    /// The clock that times events; a [`ManualClock`](crate::ManualClock)
    /// makes tests exact.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Counts the events for which `counts` is true instead of dead letters.
    pub fn counting(mut self, counts: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.counts = Arc::new(counts);
        self
    }

    /// Calls `callback` each time the alert fires, on the thread that
    /// observed the event, with no lock held. Keep it quick.
    pub fn on_fire(mut self, callback: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.on_fire = Some(Arc::new(callback));
        self
    }

    /// A hook for [`Builder::on_event`](crate::Builder::on_event) that
    /// feeds this alert (a clone sharing its counts).
    pub fn hook(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let alert = self.clone();
        move |event| alert.observe(event)
    }

    /// Counts `event` if it is one this alert counts, and fires if that
    /// brings the count in the window to the threshold.
    pub fn observe(&self, event: &Event) {
        if !(self.counts)(event) {
            return;
        }
        let now = self.clock.now_nanos();
        let mut state = self.state.lock();
        self.forget_old(&mut state, now);
        state.times.push_back(now);
        let count = state.times.len();
        if !(state.armed && count >= self.threshold) {
            return;
        }
        state.armed = false;
        state.fired += 1;
        drop(state);
        if let Some(callback) = &self.on_fire {
            callback(&Alert {
                count,
                threshold: self.threshold,
                window: self.window,
                at: clock::from_nanos(now),
            });
        }
    }

    /// Events counted within the window now.
    pub fn count(&self) -> usize {
        let mut state = self.state.lock();
        self.forget_old(&mut state, self.clock.now_nanos());
        state.times.len()
    }

    /// Whether the count within the window is at or above the threshold now.
    pub fn is_firing(&self) -> bool {
        self.count() >= self.threshold
    }

    /// How many times the alert has fired.
    pub fn fired(&self) -> u64 {
        self.state.lock().fired
    }

    /// Drops the events that left the window by `now`, and re-arms the
    /// alert once the count is below the threshold.
    fn forget_old(&self, state: &mut State, now: Nanos) {
        let window = clock::duration_nanos(self.window);
        while state
            .times
            .front()
            .is_some_and(|&at| at.saturating_add(window) <= now)
        {
            state.times.pop_front();
        }
        if state.times.len() < self.threshold {
            state.armed = true;
        }
    }
}

impl fmt::Debug for RateAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateAlert")
            .field("threshold", &self.threshold)
            .field("window", &self.window)
            .field("clock", &self.clock)
            .field("fired", &self.fired())
            .finish_non_exhaustive()
    }
}
