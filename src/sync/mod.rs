//! The synchronisation the lock-free parts are built from, swappable for
//! loom's.
//!
//! The event count ([`Signal`](crate::signal::Signal)), the capacity
//! counters ([`Capacity`](crate::capacity::Capacity)) and the ready queue
//! ([`ReadyQueue`](crate::ready::ReadyQueue)) take their atomics, lock,
//! condition variable, thread yield and channel from here. A normal build
//! re-exports std's atomics, parking_lot's lock and crossbeam-channel: the
//! very same types, so the code compiles exactly as if it named them
//! directly. Built with `RUSTFLAGS="--cfg loom"`, the same names are loom's
//! types, which let the models in `src/loom_tests.rs` run every
//! interleaving of a few threads (up to a preemption bound).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the names, from std / parking_lot / crossbeam or from loom |
//! | `lock.rs` | under loom: loom's mutex and condition variable in parking_lot's shape |
//! | `channel.rs` | under loom: a stand-in for crossbeam's unbounded channel |
//!
//! What loom does not see: parking_lot's and crossbeam's own insides (a
//! model takes them as correct), time (a timed wait waits as an untimed
//! one, so the models wait without deadlines), and the signal's long spin
//! (see [`Signal`](crate::signal::Signal)), which is a matter of time only.

#[cfg(loom)]
pub(crate) mod channel;
#[cfg(loom)]
mod lock;

#[cfg(not(loom))]
pub(crate) use crossbeam_channel as channel;
#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic;
#[cfg(not(loom))]
pub(crate) use std::thread;

#[cfg(loom)]
pub(crate) use lock::{Condvar, Mutex};
#[cfg(loom)]
pub(crate) use loom::sync::atomic;
#[cfg(loom)]
pub(crate) use loom::thread;
