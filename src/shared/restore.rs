//! Rebuilding a queue from the state its journal recovered.

use super::Shared;
use crate::clock::Nanos;
use crate::codec;
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::OpenError;
use crate::message::{Entry, MessageId, Queued};
use crate::order::Priority;
use crate::wal::{Recovered, RecoveredKey, RecoveredMessage};
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

impl<T: DeserializeOwned> Shared<T> {
    /// Puts every recovered message back where it was: dead letters in the
    /// dead-letter queue, future deliveries in the delay queue, the rest
    /// ready, in order of when they became visible. A message that was in
    /// flight at the crash is ready again with its receive count; if that
    /// receive was its last allowed one, the crash counts as its failed
    /// attempt and it is dead-lettered.
    ///
    /// Live messages take capacity slots even beyond the capacity (if it
    /// was lowered since): sends wait until the queue is below it again.
    pub(crate) fn restore(&self, recovered: Recovered) -> Result<(), OpenError> {
        let now = self.now();
        if recovered.next_id > MAX_ID {
            return Err(OpenError::Corrupted {
                file: String::new(),
                offset: 0,
                reason: format!("message id {} is out of range", recovered.next_id),
            });
        }
        let next_id = recovered.next_id.max(1);
        self.ids.next.store(next_id, SeqCst);
        self.ids.first.store(next_id, SeqCst);
        if recovered.paused {
            self.controls.set_paused(true);
        }
        for key in &recovered.dedup_keys {
            self.remember_key(key, now);
        }
        let mut messages = Vec::with_capacity(recovered.messages.len());
        for message in recovered.messages {
            if let Some(key) = &message.key {
                self.remember_key(key, now);
            }
            messages.push(decode::<T>(message)?);
        }
        let live = messages.iter().filter(|m| m.dead.is_none()).count();
        self.capacity.force_take(live);
        let mut ready = Vec::new();
        for Restored {
            entry,
            visible_at,
            dead,
        } in messages
        {
            match dead {
                Some((at, reason)) => {
                    self.dead
                        .insert_logged(DeadLetter::new(entry.into_held(), reason, at), |_| ());
                }
                None if self.used_up(&entry) => {
                    let reason = DeadLetterReason::MaxReceives(entry.receive_count);
                    self.bury(entry.into_held(), reason, now, None)
                        .and_then(|ticket| self.durable(ticket))
                        .map_err(OpenError::Storage)?;
                }
                // Its time to live ran out while the process was down.
                None if entry.expired(now) => {
                    let at = entry.expires_at().unwrap_or(now);
                    self.bury(entry.into_held(), DeadLetterReason::Expired, at, None)
                        .and_then(|ticket| self.durable(ticket))
                        .map_err(OpenError::Storage)?;
                }
                None => {
                    // Back in its group, by its id (`order.rs`).
                    self.join_order(&entry);
                    if let Some(at) = entry.expires_at().filter(|_| entry.receive_count == 0) {
                        self.expire_at(at, entry.id);
                    }
                    if visible_at > now {
                        self.hold_until(visible_at, entry);
                    } else {
                        ready.push((visible_at, entry));
                    }
                }
            }
        }
        ready.sort_by_key(|(at, entry)| (*at, entry.id));
        for (at, entry) in ready {
            self.push_ready(entry, at);
        }
        Ok(())
    }

    fn remember_key(&self, key: &RecoveredKey, now: Nanos) {
        let name: Arc<str> = key.key.as_str().into();
        let id = MessageId(key.id);
        self.dedup
            .restore(&name, key.payload_hash, id, key.expires_at, now);
    }
}

/// Ids above this are refused on open: a log claiming such an id (which a
/// queue cannot reach by sending) is damaged, and ids must never wrap.
const MAX_ID: u64 = 1 << 62;

/// A recovered message, decoded.
struct Restored<T> {
    entry: Queued<T>,
    visible_at: Nanos,
    dead: Option<(Nanos, DeadLetterReason)>,
}

fn decode<T: DeserializeOwned>(message: RecoveredMessage) -> Result<Restored<T>, OpenError> {
    let id = MessageId(message.id);
    let payload = codec::decode::<T>(&message.payload)
        .map_err(|reason| OpenError::Undecodable { id, reason })?;
    Ok(Restored {
        entry: {
            let key = message.key.map(|key| key.key.into());
            let mut entry = Entry::new(id, payload, message.enqueued_at, key);
            entry.receive_count = message.receive_count;
            entry.set_errors(message.errors);
            entry.set_limits(message.max_receives, message.expires_at);
            let priority = message
                .priority
                .map_or(Ok(Priority::Normal), Priority::from_level);
            let priority = priority.map_err(|error| OpenError::Corrupted {
                file: String::new(),
                offset: 0,
                reason: format!("message {id}: {error}"),
            })?;
            entry.set_order(priority, message.group.map(Arc::from));
            entry
        },
        visible_at: message.visible_at,
        dead: message.dead.map(|dead| (dead.at, dead.reason)),
    })
}
