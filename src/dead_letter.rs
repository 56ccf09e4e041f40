//! The dead-letter queue attached to every queue.
//!
//! A message lands here after `max_receives` failed attempts, or at once
//! when a consumer calls [`Delivery::dead_letter`](crate::Delivery::dead_letter).
//! It keeps everything needed to understand what went wrong; it can be
//! listed, filtered, redriven into the source queue (with a fresh receive
//! count, optionally with a corrected payload) or purged. Dead letters do
//! not count against the queue's capacity.

use crate::backend::Backend;
use crate::clock::{self, Nanos};
use crate::error::{RedriveError, StorageError};
use crate::message::{Held, MessageId};
use crate::Message;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
#[cfg(feature = "redis")]
use std::sync::Arc;
use std::time::SystemTime;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// It failed this many delivery attempts (the queue's `max_receives`).
    MaxReceives(u32),
    /// A consumer sent it here with
    /// [`Delivery::dead_letter`](crate::Delivery::dead_letter), saying why.
    Rejected(String),
    /// Its time to live ([`SendOptions::ttl`](crate::SendOptions::ttl))
    /// ran out before any consumer received it.
    Expired,
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::MaxReceives(n) => write!(f, "failed {n} delivery attempts"),
            DeadLetterReason::Rejected(reason) => write!(f, "rejected: {reason}"),
            DeadLetterReason::Expired => f.write_str("expired"),
        }
    }
}

/// A message in the dead-letter queue, with its history.
pub struct DeadLetter<T> {
    entry: Held<T>,
    reason: DeadLetterReason,
    dead_lettered_at: Nanos,
}

impl<T> DeadLetter<T> {
    pub(crate) fn new(entry: Held<T>, reason: DeadLetterReason, at: Nanos) -> Self {
        DeadLetter {
            entry,
            reason,
            dead_lettered_at: at,
        }
    }

    pub(crate) fn into_entry(self) -> Held<T> {
        self.entry
    }

    /// The message's id (the same it was sent under).
    pub fn id(&self) -> MessageId {
        self.entry.id
    }

    /// The idempotency key it was sent with, if any.
    pub fn key(&self) -> Option<&str> {
        self.entry.key().map(|key| &**key)
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.entry.payload
    }

    /// How many times it was delivered before it landed here.
    pub fn receive_count(&self) -> u32 {
        self.entry.receive_count
    }

    /// When it was first enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        clock::from_nanos(self.entry.enqueued_at)
    }

    /// When it was dead-lettered.
    pub fn dead_lettered_at(&self) -> SystemTime {
        clock::from_nanos(self.dead_lettered_at)
    }

    /// Why it was dead-lettered.
    pub fn reason(&self) -> &DeadLetterReason {
        &self.reason
    }

    /// The error texts consumers gave with
    /// [`Delivery::fail`](crate::Delivery::fail), oldest first.
    pub fn errors(&self) -> &[String] {
        self.entry.errors()
    }
}

impl<T> Clone for DeadLetter<T> {
    fn clone(&self) -> Self {
        DeadLetter {
            entry: self.entry.clone(),
            reason: self.reason.clone(),
            dead_lettered_at: self.dead_lettered_at,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id())
            .field("key", &self.key())
            .field("payload", self.payload())
            .field("receive_count", &self.receive_count())
            .field("reason", &self.reason)
            .field("errors", &self.errors())
            .finish_non_exhaustive()
    }
}

/// Where dead letters are kept, in id order.
pub(crate) struct DeadLetterStore<T> {
    letters: Mutex<BTreeMap<MessageId, DeadLetter<T>>>,
}

impl<T> Default for DeadLetterStore<T> {
    fn default() -> Self {
        DeadLetterStore {
            letters: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T> DeadLetterStore<T> {
    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.letters.lock().contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.letters.lock().len()
    }

    pub(crate) fn list(&self) -> Vec<DeadLetter<T>> {
        self.letters.lock().values().cloned().collect()
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<DeadLetter<T>> {
        self.letters.lock().get(&id).cloned()
    }

    pub(crate) fn ids(&self) -> Vec<MessageId> {
        self.letters.lock().keys().copied().collect()
    }

    /// Inserts `letter`, first calling `log` under the store's lock, so that
    /// its record reaches the log before any redrive or purge of it can.
    pub(crate) fn insert_logged<R>(
        &self,
        letter: DeadLetter<T>,
        log: impl FnOnce(&DeadLetter<T>) -> R,
    ) -> R {
        let mut letters = self.letters.lock();
        let logged = log(&letter);
        letters.insert(letter.id(), letter);
        logged
    }

    /// Removes the letter `id` if `log` (called under the lock) succeeds.
    pub(crate) fn remove_logged<R, E>(
        &self,
        id: MessageId,
        log: impl FnOnce(&DeadLetter<T>) -> Result<R, E>,
    ) -> Option<Result<(DeadLetter<T>, R), E>> {
        let mut letters = self.letters.lock();
        let logged = match log(letters.get(&id)?) {
            Ok(logged) => logged,
            Err(error) => return Some(Err(error)),
        };
        let letter = letters.remove(&id).expect("present under the lock");
        Some(Ok((letter, logged)))
    }

    /// Removes every letter if `log` (called under the lock) succeeds;
    /// returns how many.
    pub(crate) fn clear_logged<R, E>(
        &self,
        log: impl FnOnce() -> Result<R, E>,
    ) -> Result<(usize, R), E> {
        let mut letters = self.letters.lock();
        let logged = log()?;
        Ok((std::mem::take(&mut *letters).len(), logged))
    }
}

/// A handle on a queue's dead-letter queue, from
/// [`Queue::dead_letters`](crate::Queue::dead_letters).
///
/// ```
/// use spool::{Backoff, DeadLetterReason, Queue};
///
/// let queue: Queue<String> = Queue::builder()
///     .max_receives(2)
///     .backoff(Backoff::None) // retry at once
///     .open()?;
/// queue.producer().send("{not json".to_string())?;
/// let consumer = queue.consumer();
/// consumer.try_recv()?.fail("parse error at 0")?;
/// consumer.try_recv()?.fail("parse error at 0")?; // second failure: dead-lettered
///
/// let dlq = queue.dead_letters();
/// let letter = &dlq.list()[0];
/// assert_eq!(letter.reason(), &DeadLetterReason::MaxReceives(2));
/// assert_eq!(letter.errors(), ["parse error at 0", "parse error at 0"]);
///
/// dlq.redrive_with(letter.id(), "{}".to_string())?; // fixed
/// let again = consumer.try_recv()?;
/// assert_eq!((again.as_str(), again.receive_count()), ("{}", 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DeadLetters<T> {
    backend: Backend<T>,
}

impl<T> Clone for DeadLetters<T> {
    fn clone(&self) -> Self {
        DeadLetters {
            backend: self.backend.clone(),
        }
    }
}

impl<T> fmt::Debug for DeadLetters<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters").finish_non_exhaustive()
    }
}

impl<T: Message> DeadLetters<T> {
    pub(crate) fn new(backend: Backend<T>) -> Self {
        DeadLetters { backend }
    }

    /// How many messages are dead-lettered (0 if a Redis server cannot be
    /// reached: [`Queue::stats`](crate::Queue::stats) says so instead).
    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::Local(shared) => shared.dead_letters().len(),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.stats().map_or(0, |stats| stats.dead_letters),
        }
    }

    /// Whether the dead-letter queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every dead letter, in id (send) order (none if a Redis server
    /// cannot be reached: [`try_list`](Self::try_list) says why).
    pub fn list(&self) -> Vec<DeadLetter<T>> {
        self.try_list().unwrap_or_default()
    }

    /// [`list`](Self::list), with the error of a backend that failed.
    pub fn try_list(&self) -> Result<Vec<DeadLetter<T>>, StorageError> {
        match &self.backend {
            Backend::Local(shared) => Ok(shared.dead_letters().list()),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.dead_letters(),
        }
    }

    /// One dead letter by id (`None` too if a Redis server cannot be
    /// reached: [`try_get`](Self::try_get) says why).
    pub fn get(&self, id: MessageId) -> Option<DeadLetter<T>> {
        self.try_get(id).ok().flatten()
    }

    /// [`get`](Self::get), with the error of a backend that failed.
    pub fn try_get(&self, id: MessageId) -> Result<Option<DeadLetter<T>>, StorageError> {
        match &self.backend {
            Backend::Local(shared) => Ok(shared.dead_letters().get(id)),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.dead_letter(id),
        }
    }

    /// Moves one dead letter back into the queue, with a fresh receive
    /// count and no recorded errors. It does not wait for room:
    /// [`RedriveError::Full`] at once if the queue is full.
    pub fn redrive(&self, id: MessageId) -> Result<(), RedriveError> {
        match &self.backend {
            Backend::Local(shared) => {
                shared.dead_letters(); // moves what time has made due first
                shared.redrive(id, None)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.redrive(&[id], None).map(drop),
        }
    }

    /// Like [`redrive`](Self::redrive), replacing the payload with a
    /// corrected one.
    pub fn redrive_with(&self, id: MessageId, fixed: T) -> Result<(), RedriveError> {
        match &self.backend {
            Backend::Local(shared) => {
                shared.dead_letters();
                shared.redrive(id, Some(fixed))
            }
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.redrive(&[id], Some(fixed)).map(drop),
        }
    }

    /// Moves every dead letter back into the queue, in id order. Returns how
    /// many moved. If the queue fills up first, the rest stay here and
    /// [`RedriveError::Full`] says how many moved.
    pub fn redrive_all(&self) -> Result<usize, RedriveError> {
        match &self.backend {
            Backend::Local(shared) => shared.redrive_each(shared.dead_letters().ids()),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.redrive_all(),
        }
    }

    /// Moves back the dead letters for which `select` returns `true`, in id
    /// order. `select` sees a snapshot and may call back into the queue.
    pub fn redrive_where(
        &self,
        mut select: impl FnMut(&DeadLetter<T>) -> bool,
    ) -> Result<usize, RedriveError> {
        let chosen: Vec<MessageId> = self
            .try_list()
            .map_err(RedriveError::Storage)?
            .into_iter()
            .filter(|l| select(l))
            .map(|l| l.id())
            .collect();
        match &self.backend {
            Backend::Local(shared) => shared.redrive_each(chosen),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.redrive(&chosen, None),
        }
    }

    /// Deletes the dead letter `id` for good and returns it; `None` if
    /// there is none (redriven, purged or removed meanwhile). Counted in
    /// [`Stats::purged`](crate::Stats::purged); a persistent queue waits
    /// for its record as for an ack, so a reopen does not bring it back.
    pub fn remove(&self, id: MessageId) -> Result<Option<DeadLetter<T>>, StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.remove_dead_letter(id),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.remove_dead_letter(id),
        }
    }

    /// [`remove`](Self::remove) for async code: waits for the disk without
    /// blocking the thread. Cancel safety: the letter is removed at the
    /// first poll; dropped after, only the wait for the disk is given up.
    pub async fn remove_async(&self, id: MessageId) -> Result<Option<DeadLetter<T>>, StorageError> {
        match &self.backend {
            Backend::Local(shared) => {
                let (letter, ticket) = shared.remove_dead_letter_logged(id)?;
                shared.durable_async(ticket).await?;
                Ok(letter)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => {
                let remote = Arc::clone(remote);
                crate::redis::offload(move || remote.remove_dead_letter(id)).await
            }
        }
    }

    /// Deletes every dead letter; returns how many.
    pub fn purge(&self) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Local(shared) => {
                shared.dead_letters();
                shared.purge()
            }
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.purge(),
        }
    }
}
