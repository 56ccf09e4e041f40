//! The hooks of a build without `metrics` or `tracing`: nothing, inlined
//! away.

#![allow(dead_code)] // each half is used by the build that lacks its feature

use crate::dead_letter::DeadLetterReason;
use crate::error::StorageError;
use crate::message::MessageId;
use std::sync::Arc;

/// Registers a queue with the metrics reporter: nothing to do.
#[inline(always)]
pub(crate) fn register<Q>(_queue: &Arc<Q>) {}

/// The write-ahead file's metrics: none.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WalMetrics;

impl WalMetrics {
    #[inline(always)]
    pub(crate) fn new(_queue: &str) -> Self {
        WalMetrics
    }

    /// When a sync starts: nothing is timed.
    #[inline(always)]
    pub(crate) fn sync_started(&self) -> NotTimed {
        NotTimed
    }

    #[inline(always)]
    pub(crate) fn synced(&self, _started: NotTimed) {}

    #[inline(always)]
    pub(crate) fn written(&self, _bytes: usize) {}
}

/// The start of a sync that is not timed.
pub(crate) struct NotTimed;

/// A delivery's span: none.
pub(crate) type DeliverySpan = ();

#[inline(always)]
pub(crate) fn delivery_span(
    _queue: &str,
    _id: MessageId,
    _key: Option<&str>,
    _receive_count: u32,
) -> DeliverySpan {
}

#[inline(always)]
pub(crate) fn dead_lettered(_queue: &str, _id: MessageId, _reason: &DeadLetterReason) {}

#[inline(always)]
pub(crate) fn poisoned(_queue: &str, _error: &StorageError) {}
