//! The `spool` command-line tool (feature `cli`): see [`spool::admin`].
//! Payloads are shown as bytes; an application's own tool built with
//! `spool::admin::main::<MyJob>()` shows them decoded, as JSON.

fn main() -> std::process::ExitCode {
    spool::admin::main_raw()
}
