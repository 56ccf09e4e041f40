//! Operating a queue directory from outside the process that runs it: the
//! `spool` command-line tool (feature `cli`).
//!
//! ```text
//! spool stats DIR [--json]      counts by state, oldest ready age, disk use, files
//! spool verify DIR              every frame and checksum; exit 0 clean, 1 torn tail, 2 corrupt
//! spool dump DIR                live messages as JSON lines
//! spool dead-letters DIR list | show ID | redrive ID... | remove ID... | purge
//! spool compact DIR
//! ```
//!
//! The read commands (`stats`, `verify`, `dump`, `dead-letters list`
//! and `show`) read the directory without taking its lock and without
//! writing anything, so they work beside the process that has the queue
//! open: they see the log as its files hold it at that moment (every
//! durable record, and perhaps records not yet synced), and say what a
//! reopen would repair rather than repairing it. A message counts as in
//! flight when its receive is recorded after the last compaction (one
//! received earlier shows as ready, as a reopen would make it). The commands that change
//! the queue (`redrive`, `remove`, `purge`, `compact`) take the lock as
//! an open does; while a process holds the directory they refuse, naming
//! its process id.
//!
//! The `spool` binary shows payloads as bytes (base64). An application
//! builds its own admin tool that also shows them as JSON, decoded as its
//! message type, in three lines:
//!
//! ```no_run
//! # #[derive(serde::Serialize, serde::Deserialize)] struct MyJob { id: u64 }
//! fn main() -> std::process::ExitCode {
//!     spool::admin::main::<MyJob>()
//! }
//! ```
//!
//! Exit status: 0 done (and for `verify`, clean); 1 `verify` found a torn
//! tail that a reopen truncates; 2 `verify` found corruption (or any
//! command met it); 3 the command could not be done (the directory is in
//! use, missing, of another message type, an id is not a dead letter, an
//! I/O error); 64 the command line is wrong.
//!
//! | file | what |
//! |---|---|
//! | `cli` | the command line (clap) and the entry points |
//! | `error` | [`AdminError`] and exit statuses |
//! | `payload` | how payloads are shown: base64, and JSON for a known type |
//! | `read` | `stats`, `verify`, `dump`, `dead-letters list` and `show` |
//! | `write` | `dead-letters redrive`, `remove`, `purge`, and `compact` |

mod cli;
mod error;
mod payload;
mod read;
mod write;

pub use cli::{main, main_raw, run};
pub use error::AdminError;
