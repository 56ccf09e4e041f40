//! The task forms of the operations that wait: they wait by returning
//! `Pending`, never by blocking the thread.
//!
//! Each is the blocking operation cut at its waits, with the same parts on
//! either side (`send.rs`, `receive.rs`, `settle.rs` expose them): where a
//! thread sleeps on a [`Signal`](crate::signal::Signal), a task registers
//! its waker there ([`Signal::poll_wait`](crate::signal::Signal::poll_wait));
//! where a thread waits for the writer, a task asks the journal to wake it
//! at the end of the round; a deadline is an [`Alarm`].
//!
//! What a task dropped at a wait leaves behind (its *cancel safety*):
//!
//! | dropped while | what happened |
//! |---|---|
//! | a send waits for room or a slot | nothing: the message is dropped with the future, not sent |
//! | a send waits for its record to be durable | sent: the record is appended, and the message becomes visible at once |
//! | a receive waits for a message | nothing: no message is taken |
//! | a receive waits for its record to be durable | nothing: the messages go back to the ready queue with their receive counts as they were (recorded so again) |
//! | a settlement or `sync` waits for the disk | the settlement is done; only its durability was not awaited |

use super::{NoRoom, Shared, Waited};
use crate::alarm::Alarm;
use crate::batch::Batch;
use crate::clock::Nanos;
use crate::delivery::{Delivery, Origin};
use crate::error::{RecvError, SendError, SettleError, StorageError};
use crate::message::{BatchBuilder, MessageId, Queued};
use crate::producer::{SendOptions, Sent};
use crate::signal::Registration;
use crate::wal::{Ticket, WaitKey};
use serde::Serialize;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::receive::Taken;
use super::send::{Appended, AppendedBatch, Appending, Checks};
use super::settle::Logged;

impl<T> Shared<T> {
    /// The task's form of [`durable`](Self::durable); `key` is its place
    /// on the writer's list, given back with [`forget`](Self::forget).
    pub(crate) fn poll_durable(
        &self,
        ticket: Option<Ticket>,
        key: &mut WaitKey,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StorageError>> {
        match (&self.journal, ticket) {
            (Some(journal), Some(ticket)) => journal
                .poll_commit(ticket, cx.waker(), key)
                .map_err(|error| self.failed(error)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Takes a task's wait off the writer's lists, if it is on one.
    pub(crate) fn forget(&self, key: &mut WaitKey) {
        if let Some(journal) = &self.journal {
            journal.forget(key);
        }
    }

    /// Waits as a task until a logged record is as durable as promised.
    pub(crate) async fn durable_async(&self, ticket: Option<Ticket>) -> Result<(), StorageError> {
        if ticket.is_none() {
            return Ok(());
        }
        let mut waiting = WriterWait::new(self);
        poll_fn(|cx| self.poll_durable(ticket, &mut waiting.key, cx)).await
    }

    /// The task's form of [`settled`](Self::settled).
    pub(crate) async fn settled_async(&self, logged: Logged) -> Result<(), SettleError> {
        self.durable_async(logged)
            .await
            .map_err(SettleError::Storage)
    }

    /// The task's form of [`sync`](Self::sync).
    pub(crate) async fn sync_async(&self) -> Result<(), StorageError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let ticket = journal.last_ticket();
        let mut waiting = WriterWait::new(self);
        poll_fn(|cx| journal.poll_synced(ticket, cx.waker(), &mut waiting.key))
            .await
            .map_err(|error| self.failed(error))
    }

    /// The task's form of [`take_slots`](Self::take_slots), without a
    /// deadline (a caller that wants one drops the future).
    async fn take_slots_async(&self, n: usize) -> Result<Waited, NoRoom> {
        if self.is_closed() {
            return Err(NoRoom::Closed);
        }
        if n > self.capacity.limit() {
            return Err(NoRoom::Full);
        }
        let mut wait = TaskWait::new(&self.capacity.signal);
        let mut first = true;
        poll_fn(|cx| {
            wait.poll(cx, || {
                let taken = self.try_slots(n, first);
                first = false;
                taken
            })
        })
        .await
    }

    /// Waits as a task until a send's append would not wait for room;
    /// returns whether it had to wait (the clock must then be read again).
    async fn room_async(&self) -> bool {
        let Some(journal) = &self.journal else {
            return false;
        };
        let mut waited = false;
        let mut waiting = WriterWait::new(self);
        poll_fn(|cx| {
            let room = journal.poll_room(cx.waker(), &mut waiting.key);
            waited |= room.is_pending();
            room
        })
        .await;
        waited
    }
}

impl<T: Serialize> Shared<T> {
    /// The task's form of [`send`](Self::send), waiting as long as it takes.
    pub(crate) async fn send_async(
        &self,
        message: T,
        options: SendOptions,
    ) -> Result<Sent, SendError<T>> {
        let checked = match self.check_send(&message, &options) {
            Ok(Checks::Go(checked)) => checked,
            Ok(Checks::Duplicate(original)) => {
                return self.duplicate_async(message, original).await
            }
            Err(refused) => return Err(refused.with(message)),
        };
        // Room in the writer's buffer first, then a slot: a task dropped
        // while it waits for either holds nothing.
        // A send that waited for room or a slot reads the clock again: its
        // delay, time to live and key window run from when it is enqueued,
        // and its record is not dated before those appended meanwhile.
        let waited_for_room = self.room_async().await;
        let now = match self.take_slots_async(1).await {
            Ok(Waited::No) if !waited_for_room => checked.now(),
            Ok(_) => self.now_for_send(checked.is_plain()),
            Err(no_room) => return Err(no_room.refuse(message)),
        };
        // No wait between the slot and the append: nothing to undo there.
        let appended = match self.append_send(checked, &options, now) {
            Ok(Appending::Appended(appended)) => appended,
            Ok(Appending::Duplicate(original)) => {
                return self.duplicate_async(message, original).await
            }
            Err(refused) => return Err(refused.with(message)),
        };
        let ticket = appended.ticket;
        let mut unpublished = Unpublished {
            shared: self,
            send: Some((message, options, appended)),
        };
        let durable = self.durable_async(ticket).await;
        match unpublished.send.take() {
            Some((message, options, appended)) => {
                self.finish_send(message, options, appended, durable)
            }
            None => unreachable!("taken only here and on drop"),
        }
    }

    /// The task's form of [`duplicate`](Self::duplicate).
    async fn duplicate_async(&self, message: T, original: MessageId) -> Result<Sent, SendError<T>> {
        let ticket = self.journal.as_ref().map(|journal| journal.last_ticket());
        let flushed = self.durable_async(ticket).await;
        self.duplicate_flushed(message, original, flushed)
    }

    /// The task's form of [`send_batch`](Self::send_batch).
    pub(crate) async fn send_batch_async(
        &self,
        messages: Vec<T>,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        let checked = self.check_batch(messages)?;
        self.room_async().await;
        if let Err(no_room) = self.take_slots_async(checked.messages.len()).await {
            return Err(no_room.refuse(checked.messages));
        }
        let appended = self.append_batch(checked)?;
        let ticket = appended.ticket;
        let mut unpublished = UnpublishedBatch {
            shared: self,
            appended: Some(appended),
        };
        let durable = self.durable_async(ticket).await;
        match unpublished.appended.take() {
            Some(appended) => self.finish_batch(appended, durable),
            None => unreachable!("taken only here and on drop"),
        }
    }
}

/// A send appended but not yet visible: made visible if the task is
/// dropped before its record is durable.
struct Unpublished<'a, T> {
    shared: &'a Shared<T>,
    send: Option<(T, SendOptions, Appended)>,
}

impl<T> Drop for Unpublished<'_, T> {
    fn drop(&mut self) {
        if let Some((message, options, appended)) = self.send.take() {
            self.shared.publish_send(message, options, appended);
        }
    }
}

/// [`Unpublished`], for a batch.
struct UnpublishedBatch<'a, T> {
    shared: &'a Shared<T>,
    appended: Option<AppendedBatch<T>>,
}

impl<T> Drop for UnpublishedBatch<'_, T> {
    fn drop(&mut self) {
        if let Some(appended) = self.appended.take() {
            self.shared.publish_batch(appended);
        }
    }
}

/// A task's place on the writer's lists of waiting tasks, given back when
/// the wait ends or is dropped.
struct WriterWait<'a, T> {
    shared: &'a Shared<T>,
    key: WaitKey,
}

impl<'a, T> WriterWait<'a, T> {
    fn new(shared: &'a Shared<T>) -> Self {
        WriterWait {
            shared,
            key: WaitKey::default(),
        }
    }
}

impl<T> Drop for WriterWait<'_, T> {
    fn drop(&mut self) {
        self.shared.forget(&mut self.key);
    }
}

/// A task's wait on a signal, given back when dropped.
struct TaskWait<'a> {
    signal: &'a crate::signal::Signal,
    registration: Registration,
}

impl<'a> TaskWait<'a> {
    fn new(signal: &'a crate::signal::Signal) -> Self {
        TaskWait {
            signal,
            registration: Registration::default(),
        }
    }

    fn poll<R>(&mut self, cx: &mut Context<'_>, attempt: impl FnMut() -> Option<R>) -> Poll<R> {
        (self.signal).poll_wait(&mut self.registration, cx.waker(), attempt)
    }
}

impl Drop for TaskWait<'_> {
    fn drop(&mut self) {
        self.signal.cancel(&mut self.registration);
    }
}

/// What a receive takes: one message, a batch, or one for a worker.
pub(crate) trait Take<T> {
    /// The messages taken, before they are leased.
    type Entries;
    /// What the receive returns.
    type Out;

    /// Takes what is ready, appending the receives.
    fn pop(
        &self,
        shared: &Shared<T>,
        now: Nanos,
    ) -> Result<Option<Taken<Self::Entries>>, RecvError>;

    /// Leases what was taken, once its receives are `durable`.
    fn lease(
        &self,
        origin: &Arc<Origin<T>>,
        taken: Taken<Self::Entries>,
        durable: Result<(), StorageError>,
    ) -> Result<Self::Out, RecvError>;

    /// Puts back what was taken by a receive dropped before it leased it.
    fn abandon(shared: &Shared<T>, entries: Self::Entries);
}

/// One message: [`Delivery`].
pub(crate) struct One;

impl<T> Take<T> for One {
    type Entries = Queued<T>;
    type Out = Delivery<T>;

    fn pop(&self, shared: &Shared<T>, now: Nanos) -> Result<Option<Taken<Queued<T>>>, RecvError> {
        shared.pop_one(now)
    }

    fn lease(
        &self,
        origin: &Arc<Origin<T>>,
        taken: Taken<Queued<T>>,
        durable: Result<(), StorageError>,
    ) -> Result<Delivery<T>, RecvError> {
        origin.shared.lease_one(origin, taken, durable)
    }

    fn abandon(shared: &Shared<T>, entries: Queued<T>) {
        shared.abandon_receive(vec![entries]);
    }
}

/// Up to this many messages: [`Batch`].
pub(crate) struct Many(pub(crate) usize);

impl<T> Take<T> for Many {
    type Entries = BatchBuilder<T>;
    type Out = Batch<T>;

    fn pop(
        &self,
        shared: &Shared<T>,
        now: Nanos,
    ) -> Result<Option<Taken<BatchBuilder<T>>>, RecvError> {
        shared.pop_batch(self.0, now)
    }

    fn lease(
        &self,
        origin: &Arc<Origin<T>>,
        taken: Taken<BatchBuilder<T>>,
        durable: Result<(), StorageError>,
    ) -> Result<Batch<T>, RecvError> {
        origin.shared.lease_batch(origin, taken, durable)
    }

    fn abandon(shared: &Shared<T>, entries: BatchBuilder<T>) {
        shared.abandon_receive(entries.into_queued());
    }
}

/// One message for a worker of a pool, as
/// [`receive_for_worker`](Shared::receive_for_worker): `None` once `stop`
/// is set, or `until_idle` and nothing is left to take.
pub(crate) struct ForWorker<'a> {
    pub(crate) stop: &'a AtomicBool,
    pub(crate) until_idle: &'a AtomicBool,
}

impl<T> Take<T> for ForWorker<'_> {
    type Entries = Option<Queued<T>>;
    type Out = Option<Delivery<T>>;

    fn pop(
        &self,
        shared: &Shared<T>,
        now: Nanos,
    ) -> Result<Option<Taken<Option<Queued<T>>>>, RecvError> {
        if self.stop.load(SeqCst) {
            return Ok(Some(Taken::nothing(now)));
        }
        match shared.pop_one(now)? {
            Some(taken) => Ok(Some(taken.map(Some))),
            None if self.until_idle.load(SeqCst) && shared.nothing_to_take() => {
                Ok(Some(Taken::nothing(now)))
            }
            None => Ok(None),
        }
    }

    fn lease(
        &self,
        origin: &Arc<Origin<T>>,
        taken: Taken<Option<Queued<T>>>,
        durable: Result<(), StorageError>,
    ) -> Result<Option<Delivery<T>>, RecvError> {
        match taken.transpose() {
            Some(taken) => origin.shared.lease_one(origin, taken, durable).map(Some),
            None => Ok(None),
        }
    }

    fn abandon(shared: &Shared<T>, entries: Option<Queued<T>>) {
        if let Some(entry) = entries {
            shared.abandon_receive(vec![entry]);
        }
    }
}

/// A task's receive, kept across polls: looking for messages, then (on a
/// queue whose receives wait for the disk) waiting for their receives to
/// be durable. Reusable: a stream polls one after another through it.
/// Whoever holds it calls [`cancel`](Self::cancel) when dropped.
pub(crate) struct Receiving<E> {
    registration: Registration,
    alarm: Alarm,
    /// Its place on the writer's list while it waits for the disk.
    durable: WaitKey,
    /// Taken, waiting for the receive records.
    taken: Option<Taken<E>>,
}

impl<E> Default for Receiving<E> {
    fn default() -> Self {
        Receiving {
            registration: Registration::default(),
            alarm: Alarm::default(),
            durable: WaitKey::default(),
            taken: None,
        }
    }
}

impl<E> Receiving<E> {
    /// Polls the receive: what `take` takes, `Closed` once the queue is
    /// closed and drained, `Timeout` once `deadline` has passed.
    pub(crate) fn poll<T, K: Take<T, Entries = E>>(
        &mut self,
        take: &K,
        origin: &Arc<Origin<T>>,
        deadline: Option<Instant>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<K::Out, RecvError>> {
        let shared = &origin.shared;
        if self.taken.is_none() {
            let attempt = || {
                let now = shared.now_for_tick();
                shared.tick(now);
                match take.pop(shared, now) {
                    Ok(Some(taken)) => Some(Ok(taken)),
                    Ok(None) => shared.is_drained().then_some(Err(RecvError::Closed)),
                    Err(error) => Some(Err(error)),
                }
            };
            let signal = &shared.ready.signal;
            match signal.poll_wait(&mut self.registration, cx.waker(), attempt) {
                Poll::Ready(Ok(taken)) if taken.ticket.is_none() => {
                    self.alarm.set(None, cx.waker());
                    return Poll::Ready(take.lease(origin, taken, Ok(())));
                }
                Poll::Ready(Ok(taken)) => self.taken = Some(taken),
                Poll::Ready(Err(error)) => {
                    self.alarm.set(None, cx.waker());
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        signal.cancel(&mut self.registration);
                        self.alarm.set(None, cx.waker());
                        return Poll::Ready(Err(RecvError::Timeout));
                    }
                    // The caller's own timeout; the queue's deadlines
                    // (leases, delays) ring the queue's alarm.
                    self.alarm.set(deadline, cx.waker());
                    shared.arm_deadline();
                    return Poll::Pending;
                }
            }
        }
        self.alarm.set(None, cx.waker());
        let ticket = self.taken.as_ref().and_then(|taken| taken.ticket);
        let durable = std::task::ready!(shared.poll_durable(ticket, &mut self.durable, cx));
        shared.forget(&mut self.durable);
        match self.taken.take() {
            Some(taken) => Poll::Ready(take.lease(origin, taken, durable)),
            None => unreachable!("set above"),
        }
    }

    /// Gives back what a receive dropped before it ended holds: its place
    /// among the waiters, or the messages it took.
    pub(crate) fn cancel<T, K: Take<T, Entries = E>>(&mut self, shared: &Shared<T>) {
        shared.ready.signal.cancel(&mut self.registration);
        shared.forget(&mut self.durable);
        if let Some(taken) = self.taken.take() {
            K::abandon(shared, taken.entries);
        }
    }
}
