//! Under loom: a stand-in for crossbeam's unbounded channel, the part of
//! it the ready queue uses.
//!
//! crossbeam's channel is linearizable: each send and receive takes effect
//! at one instant. A queue under a loom mutex is the same to its users,
//! and lets loom interleave the other threads between channel operations
//! (crossbeam's own atomics are invisible to loom, and checking them is
//! crossbeam's business). Errors are crossbeam's types.

use crossbeam_channel::{SendError, TryRecvError};
use loom::sync::{Arc, Mutex};
use std::collections::VecDeque;

pub(crate) struct Sender<T>(Arc<Mutex<VecDeque<T>>>);

pub(crate) struct Receiver<T>(Arc<Mutex<VecDeque<T>>>);

pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    (Sender(queue.clone()), Receiver(queue))
}

impl<T> Sender<T> {
    pub(crate) fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.lock().expect("a model panicked").push_back(value);
        Ok(())
    }
}

impl<T> Receiver<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut queue = self.0.lock().expect("a model panicked");
        queue.pop_front().ok_or(TryRecvError::Empty)
    }
}
