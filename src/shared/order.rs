//! Priorities and message groups in the queue's state changes (the rules
//! are in `order.rs`).
//!
//! A message with neither stays on the plain path: every function here
//! that the plain path calls tests the message's rare extras (one pointer,
//! null for such a message) or the controls' flag, and nothing else.

use super::Shared;
use crate::clock::Nanos;
use crate::message::{Entry, MessageId, Queued};
use std::sync::Arc;

impl<T> Shared<T> {
    /// Makes `entry` ready as of `at`: in the plain ready queue, or among
    /// the ordered messages if it has a priority or a group. The caller
    /// wakes consumers.
    #[inline(always)]
    pub(super) fn push_ready(&self, entry: Queued<T>, at: Nanos) {
        if entry.is_ordered() {
            self.push_ordered(entry);
        } else {
            self.ready.push(entry, at);
        }
    }

    #[cold]
    #[inline(never)]
    fn push_ordered(&self, entry: Queued<T>) {
        self.order.push(entry);
    }

    /// Joins an entry that has a priority or a group to its group, and
    /// turns the ordered receive path on.
    pub(super) fn join_order<P>(&self, entry: &Entry<P>) {
        if !entry.is_ordered() {
            return;
        }
        self.controls.set_ordered();
        if let Some(group) = entry.group() {
            self.order.join(group, entry.id);
        }
    }

    /// A message left the queue's live messages (acknowledged,
    /// dead-lettered, cancelled, expired): if it was in a group, the
    /// group's next message may become ready to take.
    #[inline(always)]
    pub(super) fn left_queue<P>(&self, entry: &Entry<P>) {
        if let Some(group) = entry.group() {
            self.leave_group(group, entry);
        }
    }

    #[cold]
    #[inline(never)]
    fn leave_group<P>(&self, group: &str, entry: &Entry<P>) {
        if self.order.leave(group, entry.id) {
            self.ready.signal.notify_one();
        }
    }

    /// [`left_queue`](Self::left_queue) for a message already moved on
    /// (acknowledged or buried), by its group and id.
    #[inline(always)]
    pub(super) fn left_group(&self, group: Option<Arc<str>>, id: MessageId) {
        if let Some(group) = group {
            self.leave_named(&group, id);
        }
    }

    #[cold]
    #[inline(never)]
    fn leave_named(&self, group: &str, id: MessageId) {
        if self.order.leave(group, id) {
            self.ready.signal.notify_one();
        }
    }

    /// Messages ready: plain and ordered (held back by their group too).
    pub(super) fn ready_len(&self) -> usize {
        self.ready.len().saturating_add(self.order.len())
    }

    /// Takes up to `max` ready messages for a receive, each handed to
    /// `take`: the plain ready queue's oldest, or by the ordered rules once
    /// the queue has seen a priority or a group. Returns how many.
    #[inline]
    pub(super) fn take_ready(&self, max: usize, take: impl FnMut(Queued<T>)) -> usize {
        if self.controls.ordered() {
            self.order.take(&self.ready, max, take)
        } else {
            self.ready.pop_many(max, take)
        }
    }

    /// The oldest ready message for a receive, as
    /// [`take_ready`](Self::take_ready) of one.
    #[inline]
    pub(super) fn take_ready_one(&self) -> Option<Queued<T>> {
        if self.controls.ordered() {
            let mut found = None;
            self.order.take(&self.ready, 1, |entry| found = Some(entry));
            found
        } else {
            self.ready.pop()
        }
    }

    /// Puts back messages a receive took and did not lease, at the front,
    /// where they were.
    pub(super) fn untake(&self, entries: Vec<Queued<T>>) {
        let (ordered, plain): (Vec<_>, Vec<_>) = entries.into_iter().partition(Queued::is_ordered);
        self.ready.unpop(plain);
        if !ordered.is_empty() {
            self.order.put_back(ordered);
        }
    }
}
