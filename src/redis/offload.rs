//! The async calls of a Redis queue: the blocking call runs on a helper
//! thread and the future waits for its result, so no executor thread
//! blocks, on any executor.
//!
//! Helper threads are shared by every Redis queue of the process. One is
//! started when every other is busy, and one that stays idle for
//! [`IDLE`] ends; a call waiting in `BLPOP` holds its thread, so the
//! count follows the number of waiting async calls.
//!
//! Cancel safety: dropping the future of a receive tells its call to stop
//! (within one wait of `POLL`), and a message it leased anyway goes back
//! to the front of the ready queue with its receive count as it was.
//! Other calls finish on their thread: a send's message is sent, a
//! settlement is made. A call that panics makes its future panic.

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
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

/// What becomes of a result nobody waits for any more.
type Abandon<R> = Box<dyn FnOnce(R) + Send>;

/// Where a call's result waits for its future.
struct Slot<R> {
    /// The call's result, or its panic.
    result: Option<std::thread::Result<R>>,
    waker: Option<Waker>,
    /// The future was dropped: the result goes to `abandon`.
    abandoned: bool,
    abandon: Option<Abandon<R>>,
}

/// The future of an offloaded call. Dropped before it is ready, it tells
/// the call to stop (see [`offload_abandonable`]) and hands a result that
/// comes anyway to the call's `abandon`.
pub(crate) struct Offloaded<R> {
    slot: Arc<Mutex<Slot<R>>>,
    stop: Arc<AtomicBool>,
}

impl<R> Future for Offloaded<R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut slot = self.slot.lock();
        match slot.result.take() {
            Some(Ok(result)) => Poll::Ready(result),
            // The call panicked: so does the task that awaits it.
            Some(Err(panic)) => {
                drop(slot);
                std::panic::resume_unwind(panic)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<R> Drop for Offloaded<R> {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let (result, abandon) = {
            let mut slot = self.slot.lock();
            slot.abandoned = true;
            (slot.result.take(), slot.abandon.take())
        };
        if let (Some(Ok(result)), Some(abandon)) = (result, abandon) {
            abandon(result);
        }
    }
}

/// Runs `call` on a helper thread; the future gives its result. Dropping
/// the future does not stop the call.
pub(crate) fn offload<R: Send + 'static>(
    call: impl FnOnce() -> R + Send + 'static,
) -> Offloaded<R> {
    start(move |_: &AtomicBool| call(), None)
}

/// Runs `call` on a helper thread, which should return soon once the flag
/// it is given is set: the future sets it when it is dropped. A result
/// that comes after the drop goes to `abandon` (a receive puts its
/// messages back).
pub(crate) fn offload_abandonable<R: Send + 'static>(
    call: impl FnOnce(&AtomicBool) -> R + Send + 'static,
    abandon: impl FnOnce(R) + Send + 'static,
) -> Offloaded<R> {
    start(call, Some(Box::new(abandon)))
}

fn start<R: Send + 'static>(
    call: impl FnOnce(&AtomicBool) -> R + Send + 'static,
    abandon: Option<Abandon<R>>,
) -> Offloaded<R> {
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
        abandoned: false,
        abandon,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let (filled, stopping) = (Arc::clone(&slot), Arc::clone(&stop));
    let job: Job = Box::new(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| call(&stopping)));
        let (waker, abandoned) = {
            let mut slot = filled.lock();
            if slot.abandoned {
                (None, slot.abandon.take().map(|abandon| (abandon, result)))
            } else {
                slot.result = Some(result);
                (slot.waker.take(), None)
            }
        };
        if let Some((abandon, Ok(result))) = abandoned {
            abandon(result);
        }
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
            return Offloaded { slot, stop };
        }
    }
    let _ = helpers.jobs.send(job);
    Offloaded { slot, stop }
}
