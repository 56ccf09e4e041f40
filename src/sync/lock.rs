//! Under loom: loom's mutex and condition variable with parking_lot's
//! interface (a lock that cannot be poisoned, and a wait that takes the
//! guard by reference), so that the code using them is the same for both.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

#[derive(Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

/// Holds loom's guard, which a [`Condvar`] wait takes and gives back.
pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

#[derive(Default)]
pub(crate) struct Condvar(loom::sync::Condvar);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(Some(self.0.lock().expect("a model panicked")))
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("held outside a wait")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("held outside a wait")
    }
}

impl Condvar {
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let held = guard.0.take().expect("held outside a wait");
        guard.0 = Some(self.0.wait(held).expect("a model panicked"));
    }

    /// Waits as [`wait`](Self::wait) does: loom has no time, so a model
    /// that needs the timeout to end a wait reports a deadlock.
    pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, _until: Instant) {
        self.wait(guard);
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}
