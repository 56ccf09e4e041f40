//! Configuring and opening a queue.

use crate::backoff::Backoff;
use crate::clock::{self, Clock, SystemClock};
use crate::error::OpenError;
use crate::event::{Event, EventHook};
use crate::persist::{Journal, PersistConfig};
use crate::queue::Queue;
use crate::shared::Shared;
use crate::wal::Durability;
use crate::Message;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The largest capacity a queue accepts.
pub const MAX_CAPACITY: usize = (1 << 30) - 1;

/// The longest [`Builder::idle_spin`]: spinning longer than a
/// millisecond costs more than the sleep it avoids.
pub const MAX_IDLE_SPIN: Duration = Duration::from_millis(1);

/// The largest [`max_message_bytes`](Builder::max_message_bytes) accepted
/// (512 MiB; a write-ahead frame holds at most 1 GiB).
pub const MAX_MESSAGE_BYTES: usize = 512 << 20;

/// The name of a queue opened without [`Builder::name`] or a path.
pub const UNNAMED: &str = "unnamed";

/// A queue's settings, fixed when it is opened.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The queue's name, resolved at open ([`Builder::name`]).
    pub(crate) name: Arc<str>,
    pub(crate) capacity: usize,
    pub(crate) on_event: Option<EventHookDebug>,
    pub(crate) visibility_timeout: Duration,
    pub(crate) max_receives: u32,
    pub(crate) dedup_window: Duration,
    pub(crate) dedup_key_only: bool,
    pub(crate) backoff: Backoff,
    pub(crate) max_message_bytes: usize,
    pub(crate) idle_spin: Duration,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) rate_limit: Option<crate::RateLimit>,
    pub(crate) persist: Option<PersistConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: Arc::from(UNNAMED),
            capacity: 10_000,
            on_event: None,
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
            dedup_window: Duration::from_secs(300),
            dedup_key_only: false,
            backoff: Backoff::DEFAULT,
            max_message_bytes: 1 << 20,
            idle_spin: Duration::from_micros(100),
            max_in_flight: None,
            rate_limit: None,
            persist: None,
        }
    }
}

/// An event hook that can sit in a `Debug` struct.
#[derive(Clone)]
pub(crate) struct EventHookDebug(pub(crate) EventHook);

impl fmt::Debug for EventHookDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fn(&Event)")
    }
}

/// Settings for a new queue, from [`Queue::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | the directory's name with a [`path`](Self::path), the subscription's in a [`Topic`](crate::Topic), else [`UNNAMED`] |
/// | [`capacity`](Self::capacity) | 10,000 messages |
/// | [`visibility_timeout`](Self::visibility_timeout) | 30 s |
/// | [`max_receives`](Self::max_receives) | 5 |
/// | [`dedup_window`](Self::dedup_window) | 5 min |
/// | [`dedup_key_only`](Self::dedup_key_only) | false: payloads are compared |
/// | [`backoff`](Self::backoff) | [`Backoff::DEFAULT`]: exponential from 1 s to 5 min, with jitter |
/// | [`idle_spin`](Self::idle_spin) | 100 µs |
/// | [`path`](Self::path) | none: the queue lives in memory |
/// | [`durability`](Self::durability) | [`Durability::Sync`] (with a path) |
/// | [`max_message_bytes`](Self::max_message_bytes) | 1 MiB (with a path) |
/// | [`segment_size`](Self::segment_size) | 64 MiB (with a path) |
/// | [`compaction_rate`](Self::compaction_rate) | 48 MiB/s (with a path) |
/// | [`salvage`](Self::salvage) | off |
/// | [`clock`](Self::clock) | [`SystemClock`] |
/// | `redis` (feature `redis`) | none: the queue lives in this process |
/// | `redis_replicas` (feature `redis`) | none: a change returns once the Redis primary has it |
pub struct Builder<T> {
    config: Config,
    name: Option<Arc<str>>,
    clock: Arc<dyn Clock>,
    /// A clock was given (a Redis queue keeps the server's time).
    custom_clock: bool,
    seed: Option<u64>,
    /// The Redis server's URL, for a queue there.
    #[cfg(feature = "redis")]
    redis: Option<String>,
    /// Replicas that must have each change of a Redis queue, and how long
    /// to wait for them.
    #[cfg(feature = "redis")]
    redis_replicas: Option<(u32, Duration)>,
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<T: Message> Builder<T> {
    pub(crate) fn new() -> Self {
        Builder {
            config: Config::default(),
            name: None,
            clock: Arc::new(SystemClock::new()),
            custom_clock: false,
            seed: None,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_replicas: None,
            _message: PhantomData,
        }
    }

    /// The queue's name, carried by every [`Event`] and, with the
    /// `metrics` and `tracing` features, by its metrics and spans. Any
    /// text; it need not be unique. By default the last component of the
    /// [`path`](Self::path) (a directory `/var/lib/app/uploads` names the
    /// queue `uploads`), the subscription's name for a queue of a
    /// [`Topic`](crate::Topic), and [`UNNAMED`] otherwise.
    ///
    /// ```
    /// let queue: spool::Queue<u32> = spool::Queue::builder().name("thumbnails").open()?;
    /// assert_eq!(queue.name(), "thumbnails");
    /// # Ok::<(), spool::OpenError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// Whether [`name`](Self::name) was given.
    pub(crate) fn has_name(&self) -> bool {
        self.name.is_some()
    }

    /// The most messages held at once: ready, in flight and delayed
    /// together (dead letters do not count). Sends block (or fail, for
    /// `try_send`) while it is reached.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// How long a delivery stays invisible to other consumers before it is
    /// considered failed and becomes visible again.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.config.visibility_timeout = timeout;
        self
    }

    /// How many deliveries a message gets before it is dead-lettered
    /// instead of retried.
    pub fn max_receives(mut self, max: u32) -> Self {
        self.config.max_receives = max;
        self
    }

    /// At most `n` messages in flight at once, across all consumers: a
    /// receive waits while `n` are leased (and a batch receive takes at
    /// most what is left). For a queue of calls to a slow external API.
    /// Adjustable on an open queue ([`Queue::set_max_in_flight`]); not
    /// kept in the write-ahead file (the builder sets it at each open).
    /// `0` is refused at open ([`OpenError::ZeroMaxInFlight`]).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = Some(n);
        self
    }

    /// At most [`RateLimit::n`](crate::RateLimit::n) receives per period
    /// across all consumers, with bursts of up to `n` (a token bucket on
    /// the queue's clock, full at open). A receive that finds no token
    /// waits for the next one. Adjustable on an open queue
    /// ([`Queue::set_rate_limit`]); not kept in the write-ahead file.
    pub fn rate_limit(mut self, limit: crate::RateLimit) -> Self {
        self.config.rate_limit = Some(limit);
        self
    }

    /// How long an idempotency key is remembered after its first send.
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.config.dedup_window = window;
        self
    }

    /// With `true`, a send whose idempotency key was seen within the window
    /// is a [`Sent::Duplicate`](crate::Sent::Duplicate) whatever its
    /// payload, instead of a
    /// [`SendError::KeyConflict`](crate::SendError::KeyConflict) when the
    /// payload differs: for producers that re-send the same event with a
    /// fresh timestamp. The first payload sent under the key is the one
    /// kept. A setting of the open queue, not of its file: a persistent
    /// queue reopened without it compares payloads again, keys recovered
    /// from the file included.
    pub fn dedup_key_only(mut self, key_only: bool) -> Self {
        self.config.dedup_key_only = key_only;
        self
    }

    /// The delay before a failed message is visible again: by default
    /// [`Backoff::DEFAULT`] (1 s after the first failed attempt, doubling
    /// up to 5 min, with jitter); [`Backoff::None`] retries at once.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How long a consumer that finds nothing to receive keeps looking
    /// before it sleeps, while messages have recently been coming at least
    /// that often. One consumer of a queue at a time spins, and no more
    /// than half the machine's cores across all queues; the others sleep.
    ///
    /// A sleeping consumer takes the operating system tens of microseconds
    /// to wake (more on a virtual machine), so under a steady flow spinning
    /// cuts the latency from send to receive to about a microsecond, at the
    /// price of one core busy between messages. When messages come further
    /// apart than this, or with `Duration::ZERO`, a waiting consumer spins
    /// for a few microseconds only and then sleeps. At most
    /// [`MAX_IDLE_SPIN`] (1 ms; more is [`OpenError::IdleSpinTooLong`]).
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.config.idle_spin = spin;
        self
    }

    /// The clock for leases, delays, backoff and the dedup window; a
    /// [`ManualClock`](crate::ManualClock) makes tests exact.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.custom_clock = true;
        self
    }

    /// Keeps the queue on a Redis server (feature `redis`), as queue
    /// `name` there: every process that opens the same name on the same
    /// server shares one queue, with the semantics of a local one (the
    /// README lists every difference). `url` is a `redis://` URL
    /// (`redis://:password@host:6379/0`, `rediss://` with TLS support
    /// compiled into the `redis` crate, `unix:///path`).
    ///
    /// Open the queue with the same settings in every process: capacity,
    /// visibility timeout, `max_receives`, backoff and the dedup window
    /// travel with each call, so a process with other settings applies its
    /// own. A queue opened for one message type refuses another
    /// ([`OpenError::WrongMessageType`]). Settings that a Redis queue does
    /// not offer are refused at open with [`OpenError::Unsupported`]: a
    /// custom [`clock`](Self::clock) (deadlines are the server's), an
    /// [`on_event`](Self::on_event) hook, a [`path`](Self::path),
    /// [`max_in_flight`](Self::max_in_flight) and
    /// [`rate_limit`](Self::rate_limit). The name may not contain `{` or
    /// `}` (its keys are tagged `{name}` so that a queue lives on one
    /// cluster shard).
    ///
    /// ```no_run
    /// use spool::Queue;
    ///
    /// let queue: Queue<String> = Queue::builder()
    ///     .redis("redis://127.0.0.1:6379/", "thumbnails")
    ///     .open()?;
    /// queue.producer().send("cat.png".to_string())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: impl Into<String>, name: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// On a Redis queue, each call that changes the queue returns only
    /// once `replicas` replicas of the server have the change (Redis'
    /// `WAIT`), so that a failover to one of them loses nothing that was
    /// acknowledged. If fewer have it within `timeout`, the call fails
    /// with a [`StorageError`](crate::StorageError) that says so (not
    /// unreachable): the change was made on the primary and may reach the
    /// replicas later, so a send refused this way may still be delivered
    /// (send with an idempotency key to retry safely). Without it, a call
    /// returns once the primary has the change, and the server's
    /// `appendfsync` decides what survives a crash of the primary (the
    /// README's Redis section).
    #[cfg(feature = "redis")]
    pub fn redis_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.redis_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Calls `hook` for every [`Event`]: dead-lettered, lease expired,
    /// redriven, and a poisoned write-ahead file. It runs on the thread
    /// that caused the event with no lock of the queue held (it may call
    /// back into the queue); keep it quick (count, or send to a channel).
    /// A panic in the hook is caught and ignored. Messages dead-lettered
    /// while a persistent queue is opened are reported during `open`.
    ///
    /// ```
    /// use spool::{Event, Queue};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let dead = Arc::new(AtomicUsize::new(0));
    /// let counter = dead.clone();
    /// let queue: Queue<u32> = Queue::builder()
    ///     .on_event(move |event| {
    ///         if let Event::DeadLettered { .. } = event {
    ///             counter.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .open()?;
    /// queue.producer().send(1)?;
    /// queue.consumer().try_recv()?.dead_letter("bad input")?;
    /// assert_eq!(dead.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.config.on_event = Some(EventHookDebug(Arc::new(hook)));
        self
    }

    /// Makes the queue persistent: its state is kept in a write-ahead file
    /// in directory `path` (created if missing) and restored on the next
    /// open, after a clean shutdown or a crash. See
    /// [`durability`](Self::durability) for what survives a crash, and
    /// `docs/FORMAT.md` for the files.
    ///
    /// Only one queue at a time may have a directory open, in this process
    /// or another ([`OpenError::Locked`]). It stays open until every handle
    /// of the queue (including deliveries, and the threads of a
    /// [`WorkerPool`](crate::WorkerPool) still running a handler) is
    /// dropped, and not a moment longer.
    ///
    /// ```
    /// use spool::{Durability, Queue};
    ///
    /// let dir = std::env::temp_dir().join(format!("spool-doc-{}", std::process::id()));
    /// {
    ///     let queue: Queue<String> = Queue::builder().path(&dir).open()?;
    ///     queue.producer().send("survives a restart".to_string())?;
    /// } // dropped: closed cleanly (a crash would do as well)
    /// let queue: Queue<String> = Queue::builder()
    ///     .path(&dir)
    ///     .durability(Durability::Sync)
    ///     .open()?;
    /// let delivery = queue.consumer().try_recv()?;
    /// assert_eq!(*delivery, "survives a restart");
    /// delivery.ack()?;
    /// # drop(queue);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.persistence().path = path.into();
        self
    }

    /// When an operation's record counts as written. Only for a queue with
    /// a [`path`](Self::path): without one, `open` fails with
    /// [`OpenError::NoPath`] (as it does for `segment_size` and `salvage`).
    /// See [`Durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.persistence().durability = durability;
        self
    }

    /// Whether a receive from a persistent queue waits for its record to
    /// be on disk before it hands out the message (`true`, the default).
    /// Only for a queue with a [`path`](Self::path); it matters under
    /// [`Durability::Sync`], where every other level waits for nothing.
    ///
    /// With `true`, one consumer draining a `Sync` queue pays an
    /// `fdatasync` per receive (shared with concurrent callers) before it
    /// can start the work, and in return the receive count survives any
    /// crash: a message that crashes the process on every delivery reaches
    /// the dead-letter queue after `max_receives` restarts.
    ///
    /// With `false`, the receive record is appended in order before the
    /// message is handed out, and the writer thread writes and syncs it
    /// at once, but the receive does not wait for that (the `ack` of the
    /// message does wait, for its own record and so for the receive's).
    /// A crash can then lose the last receives: their
    /// messages come back with the receive count they had before, so a
    /// message that crashes the process on every delivery may never reach
    /// the dead-letter queue (each restart may redeliver it as if for the
    /// first time). Nothing acknowledged is lost either way.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("spool-doc-lazy-{}", std::process::id()));
    /// let queue: spool::Queue<u64> = spool::Queue::builder()
    ///     .path(&dir)
    ///     .durable_receives(false) // receives do not wait for the disk
    ///     .open()?;
    /// queue.producer().send(7)?; // waits for the disk, as under `Sync`
    /// let job = queue.consumer().try_recv()?; // does not
    /// job.ack()?; // waits, for its own record and the receive before it
    /// # drop(queue);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn durable_receives(mut self, durable: bool) -> Self {
        self.persistence().durable_receives = durable;
        self
    }

    /// The largest encoded message a persistent queue accepts; a larger one
    /// is refused with [`SendError::TooLarge`](crate::SendError::TooLarge)
    /// (in memory nothing is encoded, so nothing is checked). Frames read
    /// back from disk are checked, before anything is allocated, against
    /// the limit recorded in each file's header.
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.config.max_message_bytes = max;
        self
    }

    /// The size at which a persistent queue starts a new log segment; older
    /// segments are compacted so that acknowledged messages stop taking
    /// disk space. Smaller segments reclaim sooner and compact more often.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.persistence().segment_size = bytes;
        self
    }

    /// How fast a compaction may write, in bytes per second (default
    /// 48 MiB/s): past its first 4 MiB, a compaction paces its writes so
    /// that the writer's syncs, and so the `Sync` calls waiting for them,
    /// do not queue behind its writes on the disk. `u64::MAX`: as fast as
    /// it can. Below 1 MiB/s, `open` fails with
    /// [`OpenError::InvalidCompactionRate`].
    ///
    /// It slows nobody down: when the writer would wait for a compaction
    /// (the files it has to compact pile up), the compaction stops pacing
    /// itself until it is done, and a queue being dropped does not wait
    /// for it. [`Queue::compact`](crate::Queue::compact) is paced too:
    /// compacting 100 MB of live messages takes about 2 s at the default.
    /// Why 48 MiB/s: on this project's test machine, a loop of small
    /// synced appends had a p99.9 of 1.1-1.6 ms beside a writer of 1 MiB
    /// synced chunks at 50 MB/s, 1.3-2.6 ms at 100 MB/s and 11-13 ms
    /// unpaced, against 1.0 ms alone (the README's benchmarks).
    pub fn compaction_rate(mut self, bytes_per_second: u64) -> Self {
        self.persistence().compaction_rate = bytes_per_second;
        self
    }

    /// Opens a persistent queue even if records in the middle of its
    /// write-ahead file are damaged, skipping them (they are listed in
    /// [`Queue::recovery_report`]). Off by default: damage is an
    /// [`OpenError::Corrupted`] that says where. The records in a skipped
    /// region are lost: a salvaged queue may bring back acknowledged
    /// messages or miss sent ones.
    pub fn salvage(mut self, salvage: bool) -> Self {
        self.persistence().salvage = salvage;
        self
    }

    /// Whether [`path`](Self::path) was given.
    pub(crate) fn has_path(&self) -> bool {
        self.config
            .persist
            .as_ref()
            .is_some_and(|p| !p.path.as_os_str().is_empty())
    }

    fn persistence(&mut self) -> &mut PersistConfig {
        self.config.persist.get_or_insert_with(|| PersistConfig {
            path: PathBuf::new(),
            durability: Durability::Sync,
            durable_receives: true,
            segment_size: 64 << 20,
            compaction_rate: crate::wal::DEFAULT_COMPACTION_RATE,
            salvage: false,
            name: Arc::from(UNNAMED),
        })
    }

    /// Seeds the backoff jitter, for reproducible tests.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and opens the queue.
    pub fn open(self) -> Result<Queue<T>, OpenError> {
        self.open_on(None)
    }

    /// Opens a persistent queue on a simulated disk (the path only names it).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn open_on_storage(
        self,
        storage: Arc<dyn crate::wal::Storage>,
    ) -> Result<Queue<T>, OpenError> {
        self.open_on(Some(storage))
    }

    fn open_on(self, storage: Option<Arc<dyn crate::wal::Storage>>) -> Result<Queue<T>, OpenError> {
        let mut config = self.config;
        let from_path = config
            .persist
            .as_ref()
            .and_then(|p| p.path.file_name())
            .map(|name| Arc::from(name.to_string_lossy().as_ref()));
        if let Some(name) = self.name.or(from_path) {
            config.name = name;
        }
        if config.capacity == 0 {
            return Err(OpenError::ZeroCapacity);
        }
        if config.capacity > MAX_CAPACITY {
            return Err(OpenError::CapacityTooLarge {
                requested: config.capacity,
                max: MAX_CAPACITY,
            });
        }
        if config.visibility_timeout.is_zero() {
            return Err(OpenError::ZeroVisibilityTimeout);
        }
        if config.max_receives == 0 {
            return Err(OpenError::ZeroMaxReceives);
        }
        if config.dedup_window.is_zero() {
            return Err(OpenError::ZeroDedupWindow);
        }
        if config.max_in_flight == Some(0) {
            return Err(OpenError::ZeroMaxInFlight);
        }
        config
            .backoff
            .validate()
            .map_err(OpenError::InvalidBackoff)?;
        if config.max_message_bytes == 0 || config.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(OpenError::InvalidMaxMessageBytes {
                requested: config.max_message_bytes,
                max: MAX_MESSAGE_BYTES,
            });
        }
        if let Some(persist) = &config.persist {
            if persist.compaction_rate < crate::wal::MIN_COMPACTION_RATE {
                return Err(OpenError::InvalidCompactionRate {
                    requested: persist.compaction_rate,
                    min: crate::wal::MIN_COMPACTION_RATE,
                });
            }
        }
        if config.idle_spin > MAX_IDLE_SPIN {
            return Err(OpenError::IdleSpinTooLong {
                requested: config.idle_spin,
                max: MAX_IDLE_SPIN,
            });
        }
        #[cfg(feature = "redis")]
        if let Some(url) = &self.redis {
            let refuse = |what| OpenError::Unsupported {
                backend: crate::redis::BACKEND,
                what,
            };
            let refused = [
                (self.custom_clock, "a custom clock"),
                (config.on_event.is_some(), "an event hook"),
                (config.persist.is_some(), "a path"),
                (config.max_in_flight.is_some(), "max_in_flight"),
                (config.rate_limit.is_some(), "a rate limit"),
                (config.name.contains(['{', '}']), "a name with braces"),
            ];
            if let Some((_, what)) = refused.iter().find(|(refused, _)| *refused) {
                return Err(refuse(what));
            }
            let remote = crate::redis::Remote::open(url, &config, self.redis_replicas)?;
            return Ok(Queue::new(crate::backend::Backend::Redis(remote)));
        }
        #[cfg(feature = "redis")]
        if self.redis_replicas.is_some() {
            return Err(OpenError::Unsupported {
                backend: "local",
                what: "redis_replicas",
            });
        }
        let seed = self
            .seed
            .unwrap_or_else(|| clock::to_nanos(std::time::SystemTime::now()));
        let Some(mut persist) = config.persist.clone() else {
            let shared = Shared::new(config, self.clock, seed, None);
            crate::observe::register(&shared);
            return Ok(Queue::new(crate::backend::Backend::Local(shared)));
        };
        persist.name = Arc::clone(&config.name);
        if persist.path.as_os_str().is_empty() {
            return Err(OpenError::NoPath);
        }
        let opened = match storage {
            Some(storage) => Journal::open_on::<T>(storage, &persist, config.max_message_bytes),
            None => Journal::open::<T>(&persist, config.max_message_bytes),
        };
        let (journal, recovered) = opened?;
        let report = recovered.report.clone();
        let shared = Shared::new(config, self.clock, seed, Some((journal, report)));
        shared.restore(recovered)?;
        // Only now: a compaction due at open would compete with the
        // restore for the cores.
        shared.start_compaction();
        crate::observe::register(&shared);
        Ok(Queue::new(crate::backend::Backend::Local(shared)))
    }
}
