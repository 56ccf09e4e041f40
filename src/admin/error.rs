//! What can go wrong in an admin command, and the exit status it gives.

use crate::wal::WalError;
use std::path::PathBuf;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// There is no such directory.
    #[error("{0} is not a directory")]
    NoDirectory(PathBuf),
    /// The directory holds no write-ahead file.
    #[error("{0} holds no spool queue (no write-ahead file)")]
    NotAQueue(PathBuf),
    /// A process has the queue open, so it cannot be changed from outside.
    #[error("{dir} is in use by {}: stop it, or change the queue from inside it", holder.map_or("another process".to_string(), |pid| format!("process {pid}")))]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id, as it wrote it in the lock file.
        holder: Option<u32>,
    },
    /// An id given is not a dead letter of the queue (it may be live, gone,
    /// or never sent). Nothing was changed.
    #[error("message {0} is not in the dead-letter queue; nothing was changed")]
    NotADeadLetter(u64),
    /// A record is damaged: the file and the offset where.
    #[error("corrupted: {file} at offset {offset}: {reason}")]
    Corrupted {
        /// The file.
        file: String,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Writing the output failed (a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// Reading or writing the directory failed, or its files are of another
    /// message type or format.
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
}

impl AdminError {
    /// The process exit status for this failure (see the
    /// [module docs](crate::admin)).
    pub fn exit_status(&self) -> u8 {
        match self {
            AdminError::Corrupted { .. } => 2,
            _ => 3,
        }
    }
}

impl From<WalError> for AdminError {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Corrupted {
                file,
                offset,
                reason,
            } => AdminError::Corrupted {
                file,
                offset,
                reason,
            },
            other => AdminError::Storage(other.into()),
        }
    }
}
