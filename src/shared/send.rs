//! Sending: capacity, idempotency keys, the enqueue record, visibility.

use super::{Shared, Wait, Waited};
use crate::clock::{self, Nanos};
use crate::codec;
use crate::dedup::KeyStatus;
use crate::error::SendError;
use crate::error::StorageError;
use crate::message::{Entry, MessageId, Queued};
use crate::order::{Priority, MAX_GROUP_BYTES};
use crate::persist::Journal;
use crate::producer::MAX_KEY_BYTES;
use crate::producer::{OrderOptions, SendOptions, Sent};
use crate::stats::Counters;
use crate::wal::Ticket;
use crate::wal::{KeyRef, Record};
use serde::Serialize;
use std::sync::atomic::Ordering::{Release, SeqCst};

/// An upper bound on an enqueue record's bytes besides its payload.
const ENQUEUE_OVERHEAD: usize = 64;

/// A send checked and encoded, not yet given room. The message itself
/// stays with the caller (moving it through each step costs the hot path
/// its copies).
pub(crate) struct Checked {
    encoded: Vec<u8>,
    /// The payload's fingerprint, for a keyed send.
    hash: u64,
    /// Without a key, a delay or limits (see [`Shared::now_for_send`]).
    plain: bool,
    /// The time it was checked at.
    now: Nanos,
}

impl Checked {
    /// When it was checked.
    pub(crate) fn now(&self) -> Nanos {
        self.now
    }

    /// Without a key, a delay or limits.
    pub(crate) fn is_plain(&self) -> bool {
        self.plain
    }
}

/// What checking a send found.
pub(crate) enum Checks {
    /// Go on: take a slot, then append.
    Go(Checked),
    /// Its key was seen: nothing is enqueued, and once the original is as
    /// durable as promised it is reported (see [`Shared::duplicate`]).
    Duplicate(MessageId),
}

/// A send whose record is appended, not yet visible: it becomes visible
/// once the record is as durable as promised ([`Shared::finish_send`]).
pub(crate) struct Appended {
    id: MessageId,
    delay: Nanos,
    now: Nanos,
    expires_at: Option<Nanos>,
    pub(crate) ticket: Option<Ticket>,
}

/// What appending a send's record found.
pub(crate) enum Appending {
    Appended(Appended),
    /// Another send claimed the key meanwhile.
    Duplicate(MessageId),
}

/// Why a send was refused, without its message: the caller gives it back
/// ([`with`](Self::with)).
pub(crate) enum Refused {
    Closed,
    Encode(String),
    TooLarge { size: usize, max: usize },
    KeyTooLong { len: usize, max: usize },
    GroupTooLong { len: usize, max: usize },
    KeyConflict(MessageId),
    Storage(StorageError),
}

impl Refused {
    /// The error that gives `message` back.
    #[cold]
    pub(crate) fn with<T>(self, message: T) -> SendError<T> {
        match self {
            Refused::Closed => SendError::Closed(message),
            Refused::Encode(reason) => SendError::Encode { message, reason },
            Refused::TooLarge { size, max } => SendError::TooLarge { message, size, max },
            Refused::KeyTooLong { len, max } => SendError::KeyTooLong { message, len, max },
            Refused::GroupTooLong { len, max } => SendError::GroupTooLong { message, len, max },
            Refused::KeyConflict(original) => SendError::KeyConflict { message, original },
            Refused::Storage(error) => SendError::Storage { message, error },
        }
    }
}

impl<T: Serialize> Shared<T> {
    pub(crate) fn send(
        &self,
        message: T,
        options: SendOptions,
        wait: Wait,
    ) -> Result<Sent, SendError<T>> {
        let checked = match self.check_send(&message, &options) {
            Ok(Checks::Go(checked)) => checked,
            Ok(Checks::Duplicate(original)) => return self.duplicate(message, original),
            Err(refused) => return Err(refused.with(message)),
        };
        // Room in the writer's buffer first, holding nothing (a keyed send
        // must not wait under the key table's lock), then a slot. A send
        // that waited reads the clock again.
        let waited_for_room = self.wait_room();
        let now = match self.take_slots(1, wait) {
            Ok(Waited::No) if !waited_for_room => checked.now,
            Ok(_) => self.now_for_send(checked.plain),
            Err(no_room) => return Err(no_room.refuse(message)),
        };
        let appended = match self.append_send(checked, &options, now) {
            Ok(Appending::Appended(appended)) => appended,
            Ok(Appending::Duplicate(original)) => return self.duplicate(message, original),
            Err(refused) => return Err(refused.with(message)),
        };
        let durable = self.durable(appended.ticket);
        self.finish_send(message, options, appended, durable)
    }

    /// Everything a send does before it takes a slot: the clock and its
    /// deadlines, closing, encoding, sizes, and the idempotency key.
    #[inline]
    pub(crate) fn check_send(&self, message: &T, options: &SendOptions) -> Result<Checks, Refused> {
        let plain = options.delay.is_zero()
            && options.key.is_none()
            && options.at.is_none()
            && options.ttl.is_none()
            && options.max_receives.is_none();
        let now = self.now_for_send(plain);
        self.tick(now);
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        // The bytes are needed for the journal and to compare keyed payloads.
        let encoded = if self.journal.is_some() || options.key.is_some() {
            codec::encode(message).map_err(Refused::Encode)?
        } else {
            Vec::new()
        };
        if self.journal.is_some() && encoded.len() > self.config.max_message_bytes {
            let (size, max) = (encoded.len(), self.config.max_message_bytes);
            return Err(Refused::TooLarge { size, max });
        }
        if let Some(len) = options
            .key
            .as_ref()
            .map(|k| k.len())
            .filter(|&l| l > MAX_KEY_BYTES)
        {
            let max = MAX_KEY_BYTES;
            return Err(Refused::KeyTooLong { len, max });
        }
        if let Some(order) = &options.order {
            let len = order.group.as_ref().map_or(0, |g| g.len());
            if len > MAX_GROUP_BYTES {
                let max = MAX_GROUP_BYTES;
                return Err(Refused::GroupTooLong { len, max });
            }
        }
        // Only a keyed send compares payloads.
        let hash = match options.key {
            Some(_) if !options.any_payload => codec::fingerprint(&encoded),
            _ => 0,
        };
        if let Some(key) = &options.key {
            match self.dedup.check(key, hash, now) {
                KeyStatus::New => {}
                KeyStatus::Duplicate(original) => return Ok(Checks::Duplicate(original)),
                KeyStatus::Conflict(original) => return Err(Refused::KeyConflict(original)),
            }
        }
        Ok(Checks::Go(Checked {
            encoded,
            hash,
            plain,
            now,
        }))
    }

    /// Appends the record of a send that holds its slot (given back if
    /// this fails), claiming its key. Does not wait for the record.
    #[inline]
    pub(crate) fn append_send(
        &self,
        checked: Checked,
        options: &SendOptions,
        now: Nanos,
    ) -> Result<Appending, Refused> {
        let Checked { encoded, hash, .. } = checked;
        let id = MessageId(self.ids.take(1));
        let visible_at = match options.at {
            Some(at) => clock::to_nanos(at).max(now),
            None => now.saturating_add(clock::duration_nanos(options.delay)),
        };
        let delay = visible_at - now;
        let expires_at = options
            .ttl
            .map(|ttl| now.saturating_add(clock::duration_nanos(ttl)));
        let mut ticket = None;
        let mut append = || -> Result<(), StorageError> {
            let Some(journal) = &self.journal else {
                return Ok(()); // in memory: no record to build
            };
            let record = Record::Enqueue {
                id: id.0,
                enqueued_at: now,
                visible_at,
                key: options.key.as_deref().map(|key| KeyRef {
                    key,
                    payload_hash: hash,
                    expires_at: now.saturating_add(self.dedup.window()),
                }),
                payload: &encoded,
            };
            // The limits go in the enqueue's frame: recovered together or
            // not at all.
            let ordering = options.ordering();
            let limits = match ordering {
                None => Record::Limits {
                    id: id.0,
                    max_receives: options.max_receives,
                    expires_at,
                },
                Some(order) => Record::Options {
                    id: id.0,
                    max_receives: options.max_receives,
                    expires_at,
                    priority: order.priority.level(),
                    group: order.group.as_deref(),
                },
            };
            ticket = Some(
                match ordering.is_some() || options.max_receives.is_some() || expires_at.is_some() {
                    true => journal.append(&[record, limits])?,
                    false => journal.append(&[record])?,
                },
            );
            Ok(())
        };
        let appended = match &options.key {
            // The key is claimed only now that the message has room (a send
            // that times out leaves no key behind), and only together with
            // its record (see `Dedup::claim_with`).
            Some(key) => self.dedup.claim_with(key, hash, id, now, append),
            None => append().map(|()| KeyStatus::New),
        };
        match appended {
            Ok(KeyStatus::New) => Ok(Appending::Appended(Appended {
                id,
                delay,
                now,
                expires_at,
                ticket,
            })),
            Ok(KeyStatus::Duplicate(original)) => {
                self.unsend(1);
                Ok(Appending::Duplicate(original))
            }
            Ok(KeyStatus::Conflict(original)) => {
                self.unsend(1);
                Err(Refused::KeyConflict(original))
            }
            Err(error) => {
                self.unsend(1);
                Err(Refused::Storage(self.failed(error)))
            }
        }
    }

    /// Ends a send once its record is `durable` (or failed to be).
    #[inline]
    pub(crate) fn finish_send(
        &self,
        message: T,
        options: SendOptions,
        appended: Appended,
        durable: Result<(), StorageError>,
    ) -> Result<Sent, SendError<T>> {
        if let Err(error) = durable {
            self.unsend(1);
            return Err(SendError::Storage { message, error });
        }
        let id = appended.id;
        self.publish_send(message, options, appended);
        Ok(Sent::Enqueued(id))
    }

    /// A send whose key was seen: nothing is enqueued. It is reported only
    /// once the original is as durable as the queue promises.
    fn duplicate(&self, message: T, original: MessageId) -> Result<Sent, SendError<T>> {
        let flushed = match &self.journal {
            Some(journal) => journal.flush().map_err(|error| self.failed(error)),
            None => Ok(()),
        };
        self.duplicate_flushed(message, original, flushed)
    }

    /// Reports a duplicate send once what came before it is `flushed`.
    pub(crate) fn duplicate_flushed(
        &self,
        message: T,
        original: MessageId,
        flushed: Result<(), StorageError>,
    ) -> Result<Sent, SendError<T>> {
        if let Err(error) = flushed {
            return Err(SendError::Storage { message, error });
        }
        Counters::bump(&self.counters.duplicates, 1);
        Ok(Sent::Duplicate(original))
    }

    pub(crate) fn send_batch(
        &self,
        messages: Vec<T>,
        wait: Wait,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        let checked = self.check_batch(messages)?;
        self.wait_room();
        if let Err(no_room) = self.take_slots(checked.messages.len(), wait) {
            return Err(no_room.refuse(checked.messages));
        }
        let appended = self.append_batch(checked)?;
        let durable = self.durable(appended.ticket);
        self.finish_batch(appended, durable)
    }

    /// Everything a batch send does before it takes its slots.
    pub(crate) fn check_batch(
        &self,
        messages: Vec<T>,
    ) -> Result<CheckedBatch<T>, SendError<Vec<T>>> {
        self.tick(self.now_for_send(true));
        if self.is_closed() {
            return Err(SendError::Closed(messages));
        }
        let mut encoded = Vec::new();
        if self.journal.is_some() {
            for message in &messages {
                match codec::encode(message) {
                    Ok(bytes) if bytes.len() > self.config.max_message_bytes => {
                        let (size, max) = (bytes.len(), self.config.max_message_bytes);
                        return Err(SendError::TooLarge {
                            message: messages,
                            size,
                            max,
                        });
                    }
                    Ok(bytes) => encoded.push(bytes),
                    Err(reason) => {
                        return Err(SendError::Encode {
                            message: messages,
                            reason,
                        })
                    }
                }
            }
        }
        if let Some(journal) = &self.journal {
            // One frame, so that the batch recovers all or nothing.
            let size: usize = encoded
                .iter()
                .map(|bytes| bytes.len() + ENQUEUE_OVERHEAD)
                .sum();
            if size > journal.max_frame() {
                let max = journal.max_frame();
                return Err(SendError::TooLarge {
                    message: messages,
                    size,
                    max,
                });
            }
        }
        Ok(CheckedBatch { messages, encoded })
    }

    /// Appends the records of a batch that holds its slots (given back if
    /// this fails), as one frame. Does not wait for it.
    pub(crate) fn append_batch(
        &self,
        checked: CheckedBatch<T>,
    ) -> Result<AppendedBatch<T>, SendError<Vec<T>>> {
        let CheckedBatch { messages, encoded } = checked;
        let now = self.now_for_send(true);
        let count = messages.len() as u64;
        let first = self.ids.take(count);
        let ids: Vec<MessageId> = (first..first + count).map(MessageId).collect();
        let mut ticket = None;
        if let Some(journal) = &self.journal {
            // One frame: the batch recovers all together or not at all.
            let records: Vec<Record<'_>> = ids
                .iter()
                .zip(&encoded)
                .map(|(id, payload)| Record::Enqueue {
                    id: id.0,
                    enqueued_at: now,
                    visible_at: now,
                    key: None,
                    payload,
                })
                .collect();
            match journal.append(&records) {
                Ok(appended) => ticket = Some(appended),
                Err(error) => {
                    self.unsend(messages.len());
                    let error = self.failed(error);
                    return Err(SendError::Storage {
                        message: messages,
                        error,
                    });
                }
            }
        }
        Ok(AppendedBatch {
            ids,
            messages,
            now,
            ticket,
        })
    }

    /// Ends a batch send once its records are `durable` (or failed to be).
    pub(crate) fn finish_batch(
        &self,
        appended: AppendedBatch<T>,
        durable: Result<(), StorageError>,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        if let Err(error) = durable {
            self.unsend(appended.messages.len());
            return Err(SendError::Storage {
                message: appended.messages,
                error,
            });
        }
        Ok(self.publish_batch(appended))
    }
}

/// A batch send checked and encoded, not yet given room.
pub(crate) struct CheckedBatch<T> {
    pub(crate) messages: Vec<T>,
    encoded: Vec<Vec<u8>>,
}

/// A batch whose records are appended, not yet visible.
pub(crate) struct AppendedBatch<T> {
    ids: Vec<MessageId>,
    messages: Vec<T>,
    now: Nanos,
    pub(crate) ticket: Option<Ticket>,
}

impl<T> Shared<T> {
    /// Waits until a send's append would not wait for room in the
    /// writer's buffer; whether it waited (false in memory).
    fn wait_room(&self) -> bool {
        self.journal.as_ref().is_some_and(Journal::wait_room)
    }

    /// A send that was not waited for (its task was dropped): visible at
    /// once, as its record is appended.
    #[inline(always)]
    pub(crate) fn publish_send(&self, message: T, options: SendOptions, appended: Appended) {
        let Appended {
            id,
            delay,
            now,
            expires_at,
            ..
        } = appended;
        let mut entry = Entry::new(id, message, now, options.key);
        entry.set_limits(options.max_receives, expires_at);
        if let Some(at) = expires_at {
            self.expire_at(at, id);
        }
        match options.order {
            None => self.make_visible(entry, delay, now),
            // A priority or a group, or a builder call that set neither.
            Some(order) => self.publish_ordered(entry, *order, delay, now),
        }
    }

    /// [`publish_send`](Self::publish_send) of a message sent with a
    /// priority or a group (or options that asked for neither).
    #[cold]
    #[inline(never)]
    fn publish_ordered(&self, mut entry: Queued<T>, order: OrderOptions, delay: Nanos, now: Nanos) {
        if order.priority != Priority::Normal || order.group.is_some() {
            entry.set_order(order.priority, order.group);
            self.controls.set_ordered();
        }
        if delay == 0 {
            // Joins its group as it becomes ready: one lock.
            self.push_ready(entry, now);
            self.ready.signal.notify_one();
        } else {
            self.join_order(&entry);
            self.hold_until(now.saturating_add(delay), entry);
        }
    }

    /// A batch that was not waited for (its task was dropped): visible at
    /// once, as its records are appended.
    pub(crate) fn publish_batch(&self, appended: AppendedBatch<T>) -> Vec<MessageId> {
        let AppendedBatch {
            ids, messages, now, ..
        } = appended;
        let entries = ids
            .iter()
            .zip(messages)
            .map(|(id, message)| Entry::new(*id, message, now, None))
            .collect();
        self.ready.push_many(entries, now);
        self.ready.signal.notify_all();
        ids
    }

    /// The time of a send; `plain` if it has no key and no delay.
    ///
    /// In memory, a plain send's time is only its `enqueued_at` (and the
    /// age statistics): the coarse reading does. A delay or a dedup window
    /// must not end early, so it runs from the precise reading. So does
    /// every send to a journal: its time is the record's `visible_at`, by
    /// which a reopen orders the ready messages, and a coarse reading
    /// could put a send before a release or a keyed send that came just
    /// before it (and the write costs far more than the reading).
    pub(super) fn now_for_send(&self, plain: bool) -> Nanos {
        if plain && self.journal.is_none() {
            self.now_for_tick()
        } else {
            self.now()
        }
    }

    /// Undoes `n` sends that took ids and slots but enqueued nothing.
    fn unsend(&self, n: usize) {
        // Release: a reader that sees this sees the id it takes off.
        self.ids.unsent.fetch_add(n as u64, Release);
        self.free_slots(n);
    }

    /// Puts a message without a priority or a group where consumers will
    /// find it: ready now, or delayed.
    pub(super) fn make_visible(&self, entry: Queued<T>, delay: Nanos, now: Nanos) {
        if delay == 0 {
            self.ready.push(entry, now);
            self.ready.signal.notify_one();
        } else {
            self.hold_until(now.saturating_add(delay), entry);
        }
    }

    /// Makes a message visible at `due`: now if that has passed, else later.
    pub(super) fn place(&self, due: Nanos, entry: Queued<T>, now: Nanos) {
        if due <= now {
            self.push_ready(entry, due);
            self.ready.signal.notify_one();
        } else {
            self.hold_until(due, entry);
        }
    }

    /// Keeps a message in the delay queue until `due`.
    pub(super) fn hold_until(&self, due: Nanos, entry: Queued<T>) {
        self.delayed.push(due, entry);
        self.register_deadline(due);
    }

    /// Makes sure `tick` runs by `deadline`, waking sleeping consumers if
    /// it is earlier than what they sleep towards.
    pub(super) fn register_deadline(&self, deadline: Nanos) {
        if deadline < self.next_deadline.load(SeqCst)
            && deadline < self.next_deadline.fetch_min(deadline, SeqCst)
        {
            self.ready.signal.notify_all();
        }
    }
}
