//! Connections to the server: a small pool, timeouts on every call, and
//! the mapping of the client's errors to [`StorageError`].

use crate::error::StorageError;
use crate::wal::WalError;
use ::redis::{Client, Connection, RedisError};
use parking_lot::Mutex;
use std::time::Duration;

/// How long a connection may take to open.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one call may take before it fails as unreachable (a blocking
/// wait adds its own timeout to this).
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most idle connections kept for reuse.
const KEPT: usize = 32;

/// Connections to one server, reused across calls. A connection that
/// failed is dropped, so the next call opens a fresh one: a restarted
/// server is reconnected to without anything else.
pub(super) struct Pool {
    client: Client,
    idle: Mutex<Vec<Pooled>>,
}

/// A pooled connection and the read timeout its socket has (set only
/// when a call needs another: two system calls saved on most calls).
struct Pooled {
    conn: Connection,
    read_timeout: Duration,
}

impl Pool {
    pub(super) fn new(url: &str) -> Result<Self, StorageError> {
        let client = Client::open(url).map_err(|e| failure("open", &e))?;
        Ok(Pool {
            client,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A new connection, its writes bounded by [`IO_TIMEOUT`] for good.
    fn connect(&self, operation: &'static str) -> Result<Pooled, StorageError> {
        let conn = (self.client)
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .and_then(|conn| {
                conn.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(conn)
            })
            .map_err(|e| failure(operation, &e))?;
        Ok(Pooled {
            conn,
            read_timeout: Duration::ZERO,
        })
    }

    /// Runs `call` on a connection whose reads wait at most `extra` more
    /// than [`IO_TIMEOUT`].
    pub(super) fn with<R>(
        &self,
        operation: &'static str,
        extra: Duration,
        call: impl FnMut(&mut Connection) -> Result<R, RedisError>,
    ) -> Result<R, StorageError> {
        let timeout = IO_TIMEOUT.saturating_add(extra);
        let reused = self.idle.lock().pop();
        let was_idle = reused.is_some();
        let mut pooled = match reused {
            Some(pooled) => pooled,
            None => self.connect(operation)?,
        };
        pooled
            .set_read_timeout(timeout)
            .map_err(|e| failure(operation, &e))?;
        let mut call = call;
        let mut outcome = call(&mut pooled.conn);
        // A connection that sat idle may have been closed by a server that
        // restarted since: the request never reached a live server, so it
        // is sent once more on a fresh connection.
        if was_idle && matches!(&outcome, Err(e) if e.is_connection_dropped()) {
            pooled = self.connect(operation)?;
            pooled
                .set_read_timeout(timeout)
                .map_err(|e| failure(operation, &e))?;
            outcome = call(&mut pooled.conn);
        }
        // A server's error reply leaves the connection usable; any other
        // failure may leave a reply in flight on it.
        if !matches!(&outcome, Err(error) if unreachable(error)) {
            let mut pool = self.idle.lock();
            if pool.len() < KEPT {
                pool.push(pooled);
            }
        }
        outcome.map_err(|error| failure(operation, &error))
    }
}

impl Pooled {
    fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), RedisError> {
        if self.read_timeout != timeout {
            self.conn.set_read_timeout(Some(timeout))?;
            self.read_timeout = timeout;
        }
        Ok(())
    }
}

/// The server could not be reached, or cannot serve the call right now
/// (loading its data after a restart, a replica that a failover has not
/// promoted, a cluster that is down): worth trying again later.
fn unreachable(error: &RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

/// A client error as a [`StorageError`] saying what was being done.
pub(super) fn failure(operation: &'static str, error: &RedisError) -> StorageError {
    WalError::Remote {
        backend: "redis",
        operation,
        message: error.to_string(),
        unreachable: unreachable(error),
    }
    .into()
}

/// A reply that is not what the script returns (another program wrote
/// the queue's keys).
pub(super) fn malformed(operation: &'static str, what: &str) -> StorageError {
    WalError::Remote {
        backend: "redis",
        operation,
        message: format!("unexpected reply: {what}"),
        unreachable: false,
    }
    .into()
}
