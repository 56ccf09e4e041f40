//! Keeping hot atomics apart.

use std::ops::Deref;

/// Aligns its value to 128 bytes (two cache lines, as adjacent-line
/// prefetchers fetch pairs), so that a counter one thread bumps does not
/// share a line with one another thread bumps (false sharing).
#[derive(Default, Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
