//! The command line, and the entry points that run it.

use super::error::AdminError;
use super::payload::Payloads;
use super::{read, write};
use crate::Message;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status of a command line that does not parse.
const USAGE: u8 = 64;

/// Inspect, verify and repair spool queue directories.
#[derive(Debug, Parser)]
#[command(name = "spool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counts by state, the oldest ready message's age, dead letters,
    /// disk use and files. Reads without the lock.
    Stats {
        /// The queue's directory.
        dir: PathBuf,
        /// One JSON object instead of lines of text.
        #[arg(long)]
        json: bool,
    },
    /// Checks every frame and checksum. Exit 0: clean; 1: a torn tail
    /// that a reopen truncates; 2: corruption. Reads without the lock.
    Verify {
        /// The queue's directory.
        dir: PathBuf,
    },
    /// Every live message as a JSON line: id, state, receive count, key,
    /// times, payload size and bytes (base64). Reads without the lock.
    Dump {
        /// The queue's directory.
        dir: PathBuf,
    },
    /// The dead-letter queue: list and show read without the lock;
    /// redrive, remove and purge need the queue closed.
    DeadLetters {
        /// The queue's directory.
        dir: PathBuf,
        #[command(subcommand)]
        action: DeadAction,
    },
    /// Rewrites the sealed files as one base file holding only the live
    /// state. Needs the queue closed.
    Compact {
        /// The queue's directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DeadAction {
    /// Every dead letter as a JSON line.
    List,
    /// One dead letter, with the error of each failed attempt.
    Show {
        /// The message id.
        id: u64,
    },
    /// Moves dead letters back into the queue with a fresh receive count.
    Redrive {
        /// Message ids (all must be dead letters, or nothing changes).
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Deletes dead letters.
    Remove {
        /// Message ids (all must be dead letters, or nothing changes).
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Deletes every dead letter.
    Purge,
}

/// The entry point of an application's own admin tool: the `spool`
/// commands, for directories written by a queue of `T` only, with each
/// payload also shown decoded, as JSON (see the [module docs](crate::admin)).
///
/// ```no_run
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Resize { image: String, width: u32 }
///
/// fn main() -> std::process::ExitCode {
///     spool::admin::main::<Resize>()
/// }
/// ```
pub fn main<T: Message>() -> ExitCode {
    exit(run_with(
        std::env::args_os(),
        Payloads::typed::<T>(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ))
}

/// The entry point of the `spool` binary: any message type, payloads
/// shown as bytes.
pub fn main_raw() -> ExitCode {
    exit(run_with(
        std::env::args_os(),
        Payloads::raw(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ))
}

/// Runs one command line (`args[0]` is the program name) for a queue of
/// `T`, writing to `out` and `err`; returns the exit status.
pub fn run<T: Message>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    run_with(args, Payloads::typed::<T>(), out, err)
}

fn exit(status: u8) -> ExitCode {
    ExitCode::from(status)
}

fn run_with(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    payloads: Payloads,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let status = if e.use_stderr() { USAGE } else { 0 };
            let text = e.render().to_string();
            let _ = if e.use_stderr() {
                err.write_all(text.as_bytes())
            } else {
                out.write_all(text.as_bytes())
            };
            return status;
        }
    };
    match execute(cli.command, &payloads, out) {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(err, "spool: {e}");
            e.exit_status()
        }
    }
}

fn execute(command: Command, payloads: &Payloads, out: &mut dyn Write) -> Result<u8, AdminError> {
    match command {
        Command::Stats { dir, json } => read::stats(&dir, payloads, json, out).map(|()| 0),
        Command::Verify { dir } => read::verify(&dir, payloads, out),
        Command::Dump { dir } => read::dump(&dir, payloads, out).map(|()| 0),
        Command::Compact { dir } => write::compact(&dir, payloads, out).map(|()| 0),
        Command::DeadLetters { dir, action } => match action {
            DeadAction::List => read::list_dead(&dir, payloads, out),
            DeadAction::Show { id } => read::show_dead(&dir, payloads, id, out),
            DeadAction::Redrive { ids } => write::redrive(&dir, payloads, &ids, out),
            DeadAction::Remove { ids } => write::remove(&dir, payloads, &ids, out),
            DeadAction::Purge => write::purge(&dir, payloads, out),
        }
        .map(|()| 0),
    }
}
