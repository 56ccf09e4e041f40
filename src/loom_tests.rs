//! Model checks of the lock-free parts with loom: every interleaving of a
//! few threads, up to a preemption bound, and for each, what must hold.
//!
//! Built only with `RUSTFLAGS="--cfg loom"` (then [`crate::sync`] gives
//! loom's atomics, lock and condition variable to the parts below):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --profile loom --lib --target-dir target/loom loom_tests:: -- --nocapture
//! ```
//!
//! Each model prints how many interleavings it ran. `LOOM_MAX_PREEMPTIONS`
//! overrides the bounds below for a deeper (much longer) search. "Threads"
//! counts those that run at once (the test's own thread included when it
//! takes part); a bound of "none" explores every interleaving.
//!
//! | model | part | threads | bound | what it asserts |
//! |---|---|---|---|---|
//! | `signal_notify_one_wakes_the_waiter` | [`Signal`] | 2 | none | a waiter that checks a flag, then sleeps, wakes once the flag is set and `notify_one` called |
//! | `signal_notify_all_wakes_every_waiter` | [`Signal`] | 3 | 3 | the same for two waiters and `notify_all` |
//! | `signal_notify_one_per_token_wakes_both` | [`Signal`] | 3 | 3 | two waiters that each need a token, two tokens each followed by `notify_one`: both get one |
//! | `signal_task_and_thread_waiters_both_wake` | [`Signal`] | 3 | 3 | a task (`poll_wait`, parked until its waker runs) and a thread each need a token; two tokens, each followed by `notify_one`: both get one |
//! | `signal_task_dropped_after_a_notify_passes_it_on` | [`Signal`] | 3 | 3 | a task registers and is dropped (`cancel`) while a token and its `notify_one` arrive; another task waiting for that token still wakes |
//! | `capacity_never_exceeded_nor_lost` | [`Capacity`] | 2 | none | two producers taking the one slot, blocking on its signal, and giving it back: never both inside, neither left asleep, the slot free at the end |
//! | `capacity_batch_and_single_waiters_both_wake` | [`Capacity`] | 3 | 3 | a batch of 2 and a single waiting for room that one release frees: both get in |
//! | `ready_chunks_split_between_consumers` | [`ReadyQueue`] | 3 | 3 | one producer pushing a batch chunk and a single, two consumers splitting chunks: each message once, each consumer in send order, what is left after them is later than all they took |
//!
//! Each model was seen to fail on a broken copy of its part: without
//! either `SeqCst` fence of the signal, with the epoch read after the last
//! try, or without the epoch bump of `notify_one`, a waiter is left asleep
//! (loom reports a deadlock); so it is when `notify_all` wakes one waiter
//! only, and when a give-back wakes one producer (the batch model). Room
//! for one more than the limit, or a plain store for the compare-exchange
//! of `taken`, fails the capacity asserts. A pop that lets go of the lock
//! between taking a chunk and putting its rest back delivers a later
//! chunk first, and a `pop_many` that drops the rest of a chunk loses
//! messages. A task dropped without passing on a `notify_one` it had taken
//! leaves the other task asleep; a `notify_one` that wakes only a task
//! when a thread waits too, with a task that found its token by itself not
//! passing the wake-up on, leaves the thread asleep (the first version of
//! the task waiters did that: this model found it).
//!
//! What loom does not check here (see `src/sync/mod.rs`): timed waits
//! (the models wait without a deadline, and a timed wait is the same
//! protocol with one more way out), the signal's long spin (a matter of
//! time alone), and the insides of parking_lot and crossbeam-channel.
//! loom also takes `SeqCst` loads and stores as acquire and release only
//! (its README): it can report orders that `SeqCst` forbids, never miss
//! one that acquire and release allow.

use crate::capacity::Capacity;
use crate::message::{Entry, MessageId, Queued};
use crate::ready::ReadyQueue;
use crate::signal::Registration;
use crate::signal::Signal;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Runs `model` in every interleaving with up to `bound` preemptions (all
/// of them for `None`; `LOOM_MAX_PREEMPTIONS` overrides either) and prints
/// how many it ran.
fn check(name: &str, bound: Option<usize>, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(bound);
    // std's, not loom's: it counts across the interleavings.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let started = Instant::now();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        model();
    });
    println!(
        "loom model {name}: preemption bound {}, {} interleavings, {:.2?}",
        builder
            .preemption_bound
            .map_or("none".to_string(), |bound| bound.to_string()),
        runs.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
}

/// Waits on `signal` until `attempt` succeeds, as a blocking send or
/// receive does, without a deadline.
fn wait_for<R>(signal: &Signal, attempt: impl FnMut() -> Option<R>) -> R {
    signal
        .wait(None, || None, attempt)
        .expect("without a deadline a wait ends only with a result")
}

#[test]
fn signal_notify_one_wakes_the_waiter() {
    check("signal_notify_one_wakes_the_waiter", None, || {
        let signal = Arc::new(Signal::default());
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (signal, flag) = (signal.clone(), flag.clone());
            thread::spawn(move || wait_for(&signal, || flag.load(SeqCst).then_some(())))
        };
        flag.store(true, SeqCst);
        signal.notify_one();
        // A lost wake-up leaves the waiter asleep: loom reports a deadlock.
        waiter.join().unwrap();
    });
}

#[test]
fn signal_notify_all_wakes_every_waiter() {
    check("signal_notify_all_wakes_every_waiter", Some(3), || {
        let signal = Arc::new(Signal::default());
        let flag = Arc::new(AtomicBool::new(false));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (signal, flag) = (signal.clone(), flag.clone());
                thread::spawn(move || wait_for(&signal, || flag.load(SeqCst).then_some(())))
            })
            .collect();
        flag.store(true, SeqCst);
        signal.notify_all();
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn signal_notify_one_per_token_wakes_both() {
    check("signal_notify_one_per_token_wakes_both", Some(3), || {
        let signal = Arc::new(Signal::default());
        let tokens = Arc::new(AtomicUsize::new(0));
        let take = |tokens: &AtomicUsize| {
            tokens
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .ok()
                .map(drop)
        };
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (signal, tokens) = (signal.clone(), tokens.clone());
                thread::spawn(move || wait_for(&signal, || take(&tokens)))
            })
            .collect();
        for _ in 0..2 {
            tokens.fetch_add(1, SeqCst);
            signal.notify_one();
        }
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(tokens.load(SeqCst), 0, "each waiter took one token");
    });
}

/// A task's waker: unparks the thread that stands in for its executor.
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits on `signal` as a task does: polls, and between polls parks until
/// the waker runs (an executor with one task).
fn task_wait_for<R>(signal: &Signal, mut attempt: impl FnMut() -> Option<R>) -> R {
    let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
    let mut registration = Registration::default();
    loop {
        if let Poll::Ready(result) = signal.poll_wait(&mut registration, &waker, &mut attempt) {
            return result;
        }
        thread::park();
    }
}

/// Takes a token if there is one.
fn take_token(tokens: &AtomicUsize) -> Option<()> {
    tokens
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .ok()
        .map(drop)
}

#[test]
fn signal_task_and_thread_waiters_both_wake() {
    check("signal_task_and_thread_waiters_both_wake", Some(3), || {
        let signal = Arc::new(Signal::default());
        let tokens = Arc::new(AtomicUsize::new(0));
        let task = {
            let (signal, tokens) = (signal.clone(), tokens.clone());
            thread::spawn(move || task_wait_for(&signal, || take_token(&tokens)))
        };
        let blocked = {
            let (signal, tokens) = (signal.clone(), tokens.clone());
            thread::spawn(move || wait_for(&signal, || take_token(&tokens)))
        };
        for _ in 0..2 {
            tokens.fetch_add(1, SeqCst);
            signal.notify_one();
        }
        task.join().unwrap();
        blocked.join().unwrap();
        assert_eq!(tokens.load(SeqCst), 0, "each waiter took one token");
    });
}

#[test]
fn signal_task_dropped_after_a_notify_passes_it_on() {
    check(
        "signal_task_dropped_after_a_notify_passes_it_on",
        Some(3),
        || {
            let signal = Arc::new(Signal::default());
            let tokens = Arc::new(AtomicUsize::new(0));
            let dropped = {
                let signal = signal.clone();
                thread::spawn(move || {
                    // Waits for something that never comes, once, then is
                    // dropped: a `notify_one` may have picked it meanwhile.
                    let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
                    let mut registration = Registration::default();
                    let polled = signal.poll_wait(&mut registration, &waker, || None::<()>);
                    assert!(polled.is_pending());
                    signal.cancel(&mut registration);
                })
            };
            let waiting = {
                let (signal, tokens) = (signal.clone(), tokens.clone());
                thread::spawn(move || task_wait_for(&signal, || take_token(&tokens)))
            };
            tokens.fetch_add(1, SeqCst);
            signal.notify_one();
            dropped.join().unwrap();
            // A wake-up lost with the dropped task leaves this one asleep:
            // loom reports a deadlock.
            waiting.join().unwrap();
        },
    );
}

/// Takes `n` slots, waiting for room as a blocking send does.
fn take(capacity: &Capacity, n: usize) {
    wait_for(&capacity.signal, || capacity.try_take(n).then_some(()));
}

#[test]
fn capacity_never_exceeded_nor_lost() {
    check("capacity_never_exceeded_nor_lost", None, || {
        let capacity = Arc::new(Capacity::new(1));
        // Threads between a successful take and its give-back.
        let inside = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let (capacity, inside) = (capacity.clone(), inside.clone());
                thread::spawn(move || {
                    take(&capacity, 1);
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two in one slot");
                    inside.fetch_sub(1, SeqCst);
                    capacity.give_back(1);
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(capacity.held(), 0, "a slot lost");
        assert!(capacity.try_take(1), "the slot is free again");
        assert!(!capacity.try_take(1), "and there is one only");
    });
}

#[test]
fn capacity_batch_and_single_waiters_both_wake() {
    check(
        "capacity_batch_and_single_waiters_both_wake",
        Some(3),
        || {
            let capacity = Arc::new(Capacity::new(3));
            assert!(capacity.try_take(3));
            // A batch of two and a single: one release of three lets both in.
            let producers: Vec<_> = [2, 1]
                .into_iter()
                .map(|n| {
                    let capacity = capacity.clone();
                    thread::spawn(move || take(&capacity, n))
                })
                .collect();
            capacity.give_back(3);
            for producer in producers {
                producer.join().unwrap();
            }
            assert_eq!(capacity.held(), 3);
            assert!(!capacity.try_take(1), "full");
        },
    );
}

fn entry(id: u64) -> Queued<u64> {
    Entry::new(MessageId(id), id, 0, None)
}

#[test]
fn ready_chunks_split_between_consumers() {
    check("ready_chunks_split_between_consumers", Some(3), || {
        let ready = Arc::new(ReadyQueue::new(4, Duration::ZERO));
        let producer = {
            let ready = ready.clone();
            thread::spawn(move || {
                ready.push_many(vec![entry(0), entry(1), entry(2)], 0);
                ready.push(entry(3), 0);
            })
        };
        // One consumer takes one at a time, the other up to two at once:
        // a chunk is split, and its rest must come before the next chunk.
        let singles = {
            let ready = ready.clone();
            thread::spawn(move || {
                (0..2)
                    .filter_map(|_| ready.pop().map(|e| e.id.0))
                    .collect::<Vec<_>>()
            })
        };
        let pairs = {
            let ready = ready.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                ready.pop_many(2, |e| seen.push(e.id.0));
                seen
            })
        };
        producer.join().unwrap();
        let taken = [singles.join().unwrap(), pairs.join().unwrap()];
        let mut rest = Vec::new();
        ready.pop_many(usize::MAX, |e| rest.push(e.id.0));
        for seen in taken.iter().chain([&rest]) {
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "out of order: {seen:?}"
            );
        }
        let latest_taken = taken.iter().flatten().max();
        assert!(
            rest.first().is_none_or(|first| Some(first) > latest_taken),
            "left behind: {rest:?} after {taken:?}"
        );
        let mut all: Vec<u64> = taken.concat();
        all.extend(&rest);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3], "each message once");
        assert_eq!(ready.len(), 0);
    });
}
