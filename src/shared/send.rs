//! Sending: capacity, idempotency keys, the enqueue record, visibility.

use super::{Shared, Wait, Waited};
use crate::clock::{self, Nanos};
use crate::codec;
use crate::dedup::KeyStatus;
use crate::error::SendError;
use crate::message::{Entry, MessageId, Queued};
use crate::producer::MAX_KEY_BYTES;
use crate::producer::{SendOptions, Sent};
use crate::stats::Counters;
use crate::wal::{KeyRef, Record};
use serde::Serialize;
use std::sync::atomic::Ordering::{Release, SeqCst};

/// An upper bound on an enqueue record's bytes besides its payload.
const ENQUEUE_OVERHEAD: usize = 64;

impl<T: Serialize> Shared<T> {
    pub(crate) fn send(
        &self,
        message: T,
        options: SendOptions,
        wait: Wait,
    ) -> Result<Sent, SendError<T>> {
        let plain = options.delay.is_zero()
            && options.key.is_none()
            && options.at.is_none()
            && options.ttl.is_none()
            && options.max_receives.is_none();
        let read_clock = || self.now_for_send(plain);
        let mut now = read_clock();
        self.tick(now);
        if self.is_closed() {
            return Err(SendError::Closed(message));
        }
        // The bytes are needed for the journal and to compare keyed payloads.
        let encoded = if self.journal.is_some() || options.key.is_some() {
            match codec::encode(&message) {
                Ok(bytes) => bytes,
                Err(reason) => return Err(SendError::Encode { message, reason }),
            }
        } else {
            Vec::new()
        };
        if self.journal.is_some() && encoded.len() > self.config.max_message_bytes {
            let (size, max) = (encoded.len(), self.config.max_message_bytes);
            return Err(SendError::TooLarge { message, size, max });
        }
        if let Some(len) = options
            .key
            .as_ref()
            .map(|k| k.len())
            .filter(|&l| l > MAX_KEY_BYTES)
        {
            let max = MAX_KEY_BYTES;
            return Err(SendError::KeyTooLong { message, len, max });
        }
        // Only a keyed send compares payloads.
        let hash = match options.key {
            Some(_) if !options.any_payload => codec::fingerprint(&encoded),
            _ => 0,
        };
        if let Some(key) = &options.key {
            match self.dedup.check(key, hash, now) {
                KeyStatus::New => {}
                KeyStatus::Duplicate(original) => return self.duplicate(message, original),
                KeyStatus::Conflict(original) => {
                    return Err(SendError::KeyConflict { message, original })
                }
            }
        }
        match self.take_slots(1, wait) {
            Ok(Waited::No) => {}
            Ok(Waited::Yes) => now = read_clock(),
            Err(no_room) => return Err(no_room.refuse(message)),
        }
        let id = MessageId(self.ids.take(1));
        let visible_at = match options.at {
            Some(at) => clock::to_nanos(at).max(now),
            None => now.saturating_add(clock::duration_nanos(options.delay)),
        };
        let delay = visible_at - now;
        let expires_at = options
            .ttl
            .map(|ttl| now.saturating_add(clock::duration_nanos(ttl)));
        let limits =
            (options.max_receives.is_some() || expires_at.is_some()).then_some(Record::Limits {
                id: id.0,
                max_receives: options.max_receives,
                expires_at,
            });
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
        // The limits go in the enqueue's frame: recovered together or not
        // at all. (`Ack { id: 0 }` only fills the array; it is not written.)
        let written = 1 + usize::from(limits.is_some());
        let records = [record, limits.unwrap_or(Record::Ack { id: 0 })];
        let records = &records[..written];
        let mut ticket = None;
        let appended = match &options.key {
            // The key is claimed only now that the message has room (a send
            // that times out leaves no key behind), and only together with
            // its record (see `Dedup::claim_with`).
            Some(key) => self.dedup.claim_with(key, hash, id, now, || {
                ticket = self.append(records)?;
                Ok(())
            }),
            None => self.append(records).map(|appended| {
                ticket = appended;
                KeyStatus::New
            }),
        };
        let error = match appended {
            Ok(KeyStatus::New) => self.durable(ticket).err(),
            Ok(KeyStatus::Duplicate(original)) => {
                self.unsend(1);
                return self.duplicate(message, original);
            }
            Ok(KeyStatus::Conflict(original)) => {
                self.unsend(1);
                return Err(SendError::KeyConflict { message, original });
            }
            Err(error) => Some(self.failed(error)),
        };
        if let Some(error) = error {
            self.unsend(1);
            return Err(SendError::Storage { message, error });
        }
        let mut entry = Entry::new(id, message, now, options.key);
        entry.set_limits(options.max_receives, expires_at);
        if let Some(at) = expires_at {
            self.expire_at(at, id);
        }
        self.make_visible(entry, delay, now);
        Ok(Sent::Enqueued(id))
    }

    /// A send whose key was seen: nothing is enqueued. It is reported only
    /// once the original is as durable as the queue promises.
    fn duplicate(&self, message: T, original: MessageId) -> Result<Sent, SendError<T>> {
        if let Some(journal) = &self.journal {
            if let Err(error) = journal.flush() {
                return Err(SendError::Storage {
                    message,
                    error: self.failed(error),
                });
            }
        }
        Counters::bump(&self.counters.duplicates, 1);
        Ok(Sent::Duplicate(original))
    }

    pub(crate) fn send_batch(
        &self,
        messages: Vec<T>,
        wait: Wait,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
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
        if let Err(no_room) = self.take_slots(messages.len(), wait) {
            return Err(no_room.refuse(messages));
        }
        let now = self.now_for_send(true);
        let count = messages.len() as u64;
        let first = self.ids.take(count);
        let ids: Vec<MessageId> = (first..first + count).map(MessageId).collect();
        if self.journal.is_some() {
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
            if let Err(error) = self.log_durably(&records) {
                self.unsend(messages.len());
                return Err(SendError::Storage {
                    message: messages,
                    error,
                });
            }
        }
        let entries = ids
            .iter()
            .zip(messages)
            .map(|(id, message)| Entry::new(*id, message, now, None))
            .collect();
        self.ready.push_many(entries, now);
        self.ready.signal.notify_all();
        Ok(ids)
    }
}

impl<T> Shared<T> {
    /// The time of a send; `plain` if it has no key and no delay.
    ///
    /// In memory, a plain send's time is only its `enqueued_at` (and the
    /// age statistics): the coarse reading does. A delay or a dedup window
    /// must not end early, so it runs from the precise reading. So does
    /// every send to a journal: its time is the record's `visible_at`, by
    /// which a reopen orders the ready messages, and a coarse reading
    /// could put a send before a release or a keyed send that came just
    /// before it (and the write costs far more than the reading).
    fn now_for_send(&self, plain: bool) -> Nanos {
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

    /// Puts a message where consumers will find it: ready now, or delayed.
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
            self.ready.push(entry, due);
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
