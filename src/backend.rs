//! What the handles act on: this process's queue, or (feature `redis`) a
//! queue on a Redis server that other processes share.
//!
//! Each handle holds a [`Backend`] (the receiving side a
//! [`Source`](crate::delivery::Source), which also says which lease
//! shard it uses) and calls the same operation on either. Without the
//! `redis` feature the enum has one variant, and a `match` on it compiles
//! to the local call alone: the local path pays nothing for the seam.

use crate::shared::Shared;
use std::sync::Arc;

pub(crate) enum Backend<T> {
    Local(Arc<Shared<T>>),
    #[cfg(feature = "redis")]
    Redis(Arc<crate::redis::Remote<T>>),
}

impl<T> Clone for Backend<T> {
    fn clone(&self) -> Self {
        match self {
            Backend::Local(shared) => Backend::Local(Arc::clone(shared)),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => Backend::Redis(Arc::clone(remote)),
        }
    }
}

impl<T> Backend<T> {
    /// One more handle that keeps a local queue open (a Redis queue
    /// closes only when asked).
    pub(crate) fn add_sender(&self) {
        match self {
            Backend::Local(shared) => shared.add_sender(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => {}
        }
    }

    pub(crate) fn drop_sender(&self) {
        match self {
            Backend::Local(shared) => shared.drop_sender(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => {}
        }
    }
}
