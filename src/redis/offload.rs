//! The async calls of a Redis queue: the blocking call runs on a helper
//! thread and the future waits for its result, so no executor thread
//! blocks, on any executor.
//!
//! Helper threads are shared by every Redis queue of the process. One is
//! started when every other is busy, and one that stays idle for
//! [`IDLE`] ends; a call waiting in `BLPOP` holds its thread, so the
//! count follows the number of waiting async calls.
//!
//! Cancel safety: dropping the future does not stop the call, which
//! finishes on its thread. Its result is then dropped: a receive's
//! deliveries are dropped unsettled, which releases them (a failed
//! attempt, as a `nack`); a send's message is sent.

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How long an idle helper thread waits for work before it ends.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Helpers {
    jobs: Sender<Job>,
    queue: Receiver<Job>,
    idle: AtomicUsize,
}

fn helpers() -> &'static Helpers {
    static HELPERS: OnceLock<Helpers> = OnceLock::new();
    HELPERS.get_or_init(|| {
        let (jobs, queue) = crossbeam_channel::unbounded();
        Helpers {
            jobs,
            queue,
            idle: AtomicUsize::new(0),
        }
    })
}

/// A helper thread: it starts reserved for the job that started it, and
/// after each job counts itself idle, so that the next job reserves it
/// instead of starting a thread. Every queued job has a thread reserved
/// for it, so none waits behind a call that blocks.
fn helper(helpers: &'static Helpers) {
    loop {
        match helpers.queue.recv_timeout(IDLE) {
            Ok(job) => {
                job();
                helpers.idle.fetch_add(1, SeqCst);
            }
            Err(_) => {
                let unreserved = helpers
                    .idle
                    .fetch_update(SeqCst, SeqCst, |idle| idle.checked_sub(1));
                if unreserved.is_ok() {
                    return;
                }
                // A job reserved this thread meanwhile: it is on its way.
            }
        }
    }
}

/// Where a call's result waits for its future.
struct Slot<R> {
    result: Option<R>,
    waker: Option<Waker>,
}

/// The future of an offloaded call.
pub(crate) struct Offloaded<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

impl<R> Future for Offloaded<R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut slot = self.slot.lock();
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Runs `call` on a helper thread; the future gives its result.
pub(crate) fn offload<R: Send + 'static>(
    call: impl FnOnce() -> R + Send + 'static,
) -> Offloaded<R> {
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
    }));
    let filled = Arc::clone(&slot);
    let job: Job = Box::new(move || {
        let result = call();
        let waker = {
            let mut slot = filled.lock();
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    });
    let helpers = helpers();
    let reserved = helpers
        .idle
        .fetch_update(SeqCst, SeqCst, |idle| idle.checked_sub(1))
        .is_ok();
    if !reserved {
        let spawned = std::thread::Builder::new()
            .name("spool-redis".into())
            .spawn(move || helper(helpers));
        if spawned.is_err() {
            // No thread to be had (the process is out of them): the call
            // runs here, blocking, rather than never.
            job();
            return Offloaded { slot };
        }
    }
    let _ = helpers.jobs.send(job);
    Offloaded { slot }
}
