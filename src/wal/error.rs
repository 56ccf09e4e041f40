//! The errors of the write-ahead file.

use super::storage::Storage;
use std::io;
use std::sync::Arc;

/// Why an operation on the write-ahead file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WalError {
    /// An I/O operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done ("write", "sync", "rename", ...).
        operation: &'static str,
        /// The file or directory it was done to.
        path: String,
        #[source]
        source: io::Error,
    },
    /// The disk (or quota) is full. Nothing is corrupted: the next open
    /// truncates the partly written tail.
    #[error("disk full: {operation} {path}: {source}")]
    DiskFull {
        operation: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A checksum or structure check failed in data that was synced.
    #[error("corrupted write-ahead file {file} at offset {offset}: {reason}")]
    Corrupted {
        file: String,
        offset: u64,
        reason: String,
    },
    /// The file was written for another message type.
    #[error("{file} was written for another message type (fingerprint {found:#018x}, this queue's is {expected:#018x})")]
    WrongType {
        file: String,
        expected: u64,
        found: u64,
    },
    /// The file has a format version this build cannot read.
    #[error("{file} has format version {found}; this build reads versions 1 to {supported}")]
    UnsupportedVersion {
        file: String,
        found: u32,
        supported: u32,
    },
    /// The payloads in the file were encoded with a codec this build lacks.
    #[error("{file} uses payload codec {found}, which this build does not know")]
    UnsupportedCodec { file: String, found: u8 },
    /// Another queue (in this process or another) has the directory open.
    #[error("{path} is already open by another queue (the lock is held)")]
    Locked { path: String },
    /// A frame would exceed the maximum frame size.
    #[error("a frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: u64 },
    /// An earlier write or sync failed; nothing more is written.
    #[error("the write-ahead file stopped after an earlier failure: {0}")]
    Poisoned(#[source] Arc<WalError>),
    /// The write-ahead file was closed.
    #[error("the write-ahead file is closed")]
    Closed,
    /// A remote backend (Redis) failed or could not be reached.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    #[error("{backend} {operation}: {message}")]
    Remote {
        /// Which backend ("redis").
        backend: &'static str,
        /// What was being done.
        operation: &'static str,
        /// What the client or the server said.
        message: String,
        /// The server could not be reached, or the connection dropped or
        /// timed out: the operation may or may not have happened.
        unreachable: bool,
    },
    /// The backend does not offer this.
    #[error("the {backend} backend does not support {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
}

impl WalError {
    /// [`WalError::io`] for `operation` on file `name` of `storage`, as a
    /// `map_err` argument (the path is described before the call fails).
    pub(crate) fn on_file(
        storage: &dyn Storage,
        operation: &'static str,
        name: &str,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = storage.describe(name);
        move |e| WalError::io(operation, path, e)
    }

    /// Wraps an I/O error with what was being done to which path; a full
    /// disk gets its own variant.
    pub(crate) fn io(operation: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull
            || source.kind() == io::ErrorKind::QuotaExceeded
        {
            WalError::DiskFull {
                operation,
                path,
                source,
            }
        } else {
            WalError::Io {
                operation,
                path,
                source,
            }
        }
    }

    pub(crate) fn corrupted(file: &str, offset: u64, reason: impl Into<String>) -> Self {
        WalError::Corrupted {
            file: file.to_owned(),
            offset,
            reason: reason.into(),
        }
    }
}
