//! The receiving side.

use crate::delivery::Delivery;
use crate::error::RecvError;
use crate::shared::{Shared, Wait};
use crate::Message;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Receives messages from a queue. Cheap to clone; use from any thread.
///
/// Each call hands out a [`Delivery`] under a lease of the queue's
/// visibility timeout. When the queue is closed and nothing is left ready,
/// in flight or delayed, every receive returns [`RecvError::Closed`], so
/// `while let Ok(delivery) = consumer.recv()` ends.
///
/// With one producer and no failures, messages arrive in send order. A
/// message released or expired goes to the back of the ready queue (after
/// its backoff, if any), so retries do not keep their place.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Message> Consumer<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        Consumer { shared }
    }

    /// Receives a message, blocking until one is ready or the queue is
    /// closed and drained.
    pub fn recv(&self) -> Result<Delivery<T>, RecvError> {
        self.one(Wait::Forever)
    }

    /// Receives a message if one is ready now ([`RecvError::Empty`] if not).
    pub fn try_recv(&self) -> Result<Delivery<T>, RecvError> {
        self.one(Wait::No)
    }

    /// Receives a message, waiting at most `timeout`
    /// ([`RecvError::Timeout`] if none came).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Delivery<T>, RecvError> {
        self.one(Wait::timeout(timeout))
    }

    /// Waits up to `timeout` for a first message, then takes up to `max` in
    /// all of those ready without waiting further. Each has its own lease.
    /// On a persistent queue their receives are recorded together.
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery<T>>, RecvError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.shared.receive_batch(max, Wait::timeout(timeout))
    }

    fn one(&self, wait: Wait) -> Result<Delivery<T>, RecvError> {
        self.shared.receive_one(wait)
    }

    /// The queue's visibility timeout (for the worker pool's heartbeat).
    pub(crate) fn visibility_timeout(&self) -> Duration {
        self.shared.config.visibility_timeout
    }

    /// The queue's clock, read now.
    pub(crate) fn now(&self) -> crate::clock::Nanos {
        self.shared.now()
    }
}

impl<T> Clone for Consumer<T> {
    fn clone(&self) -> Self {
        Consumer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}
