//! What a queue tells the outside: metrics through the `metrics` facade
//! (feature `metrics`) and spans and logs through `tracing` (feature
//! `tracing`). Every hook here is an empty inline function or a
//! zero-sized type when its feature is off, so that a build with neither
//! feature runs exactly the code it ran before (issue 15).
//!
//! | file | what |
//! |---|---|
//! | `metrics` | (`metrics`) per-queue counters and gauges, published by one reporter thread; the write-ahead file's bytes, syncs and sync latency |
//! | `trace` | (`tracing`) a span per delivery; dead-lettering at warn, poisoning at error |
//! | `off` | the same hooks doing nothing, for a build without the feature |

#[cfg(feature = "metrics")]
mod metrics;
#[cfg(not(all(feature = "metrics", feature = "tracing")))]
mod off;
#[cfg(feature = "tracing")]
mod trace;

#[cfg(all(feature = "metrics", feature = "redis"))]
pub(crate) use metrics::register_remote;
#[cfg(feature = "metrics")]
pub(crate) use metrics::{register, Report, WalMetrics};
#[cfg(all(not(feature = "metrics"), feature = "redis"))]
pub(crate) use off::register as register_remote;
#[cfg(not(feature = "tracing"))]
pub(crate) use off::{dead_lettered, delivery_span, poisoned, DeliverySpan};
#[cfg(not(feature = "metrics"))]
pub(crate) use off::{register, WalMetrics};
#[cfg(feature = "tracing")]
pub(crate) use trace::{dead_lettered, delivery_span, poisoned, DeliverySpan};
