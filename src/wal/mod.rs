//! The write-ahead file (work in progress; not yet wired into the queue).
