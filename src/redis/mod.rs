//! The Redis backend (feature `redis`): one queue shared by every process
//! that opens it with [`Builder::redis`](crate::Builder::redis).
//!
//! | file | what |
//! |---|---|
//! | `queue.lua` | the queue itself: a function library, every operation one atomic `FCALL` |
//! | `mod.rs` | [`Remote`]: the operations the handles call, and their waits |
//! | `conn.rs` | the connection pool, timeouts, and errors |
//! | `wire.rs` | reading the library's replies |
//! | `offload.rs` | the async calls: a blocking call on a helper thread |
//!
//! The handles (`Producer`, `Consumer`, `Delivery`, `Batch`,
//! `DeadLetters`, `Queue`) hold either the local state or a [`Remote`],
//! and call the same operations on either.
//!
//! **State.** Every key of a queue shares the hash tag `{name}`, so a
//! queue lives on one Redis Cluster shard. The library keeps the rules the
//! local queue keeps (capacity over ready + in flight + delayed, fenced
//! leases, backoff, `max_receives`, times to live, idempotency keys); the
//! times are the server's clock, in milliseconds.
//!
//! **No reaper.** Whatever time has made due (expired leases, delays,
//! times to live, key windows) is handled at the start of every call, by
//! whichever process makes it: a consumer killed with its leases loses
//! nothing, its messages come back to others once their leases run out.
//!
//! **Versions.** The library is loaded under `spool_` and a hash of its
//! source ([`library`]), so processes running different versions of spool
//! on one server each call their own; a queue's `format` key records its
//! layout ([`FORMAT`]) and message type, checked at open. Open then adds
//! sentinels that keep the data hash and the delayed and leased sets out
//! of Redis's listpack encoding (`ops.init` in `queue.lua`).
//!
//! **Cost.** A call costs the server about 1,300 instructions for each key
//! and argument, so each operation is a function of its own (its name is
//! not an argument), the part every request shares is encoded once
//! ([`keys_part`]), and `queue.lua` takes as few arguments as it can; the
//! README's "Redis throughput" has the figures.
//!
//! **Waiting.** A receive that finds nothing is named, in the same call,
//! in a sorted set of waiting callers (each entry lapses after 2 s, so a
//! killed waiter is forgotten), then waits in `BLPOP` on a list of wake-up
//! tokens that sends (and everything else that makes a message ready)
//! push to (when a state field says someone may be waiting), one per
//! waiting caller, for at most the time until the next
//! deadline the call reported, and never more than [`POLL`]; a send waits
//! likewise for room, woken by acks, dead-lettering and cancels. Waits
//! under 100 ms sleep in the client (the server's 10 Hz tick would round
//! them up).

mod conn;
mod offload;
mod wire;

pub(crate) use offload::{offload, offload_abandonable, Offloaded};

use crate::backoff::{Backoff, Random};
use crate::builder::Config;
use crate::clock::Nanos;
use crate::codec;
use crate::dead_letter::DeadLetter;
use crate::error::StorageError;
use crate::error::{CancelError, OpenError, RecvError, RedriveError, SendError, SettleError};
use crate::message::{Held, MessageId};
use crate::producer::{SendOptions, Sent, MAX_KEY_BYTES};
use crate::queue::Cancelled;
use crate::shared::{Peeked, Wait};
use crate::stats::Stats;
use crate::wal::WalError;
use crate::Message;
use ::redis::Value;
use conn::{malformed, Pool};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The longest a blocked call waits before it asks the server again,
/// whatever it was told: a bound on how late a missed wake-up is noticed.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// The most messages one receive takes (a larger `recv_batch` takes this
/// many): one reply holds them all.
pub(crate) const MAX_BATCH: usize = 4096;

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "redis";

/// The function library (`queue.lua`), loaded into the server at open
/// and again if the server has lost it, with [`PLACEHOLDER`] replaced by
/// its name ([`library`]).
const SOURCE: &str = include_str!("queue.lua");

/// What `queue.lua` calls itself, and its functions' prefix.
const PLACEHOLDER: &str = "SPOOL_LIBRARY";

/// The layout of a queue's keys, recorded with its message type: a spool
/// that finds another one refuses to open the queue (a newer one as a
/// write-ahead file's newer format version; an older one it has no
/// migration for). 2: one record per message, idempotency keys beside
/// the messages (1, never released: four hash fields a message, and two
/// keys of their own for idempotency keys).
const FORMAT: u32 = 2;

/// The library as loaded: named `spool_` and a hash of its source, so
/// that processes running different versions of spool on one server each
/// load and call their own (a server that has a library of the same name
/// has this very code). Each operation is a function, `name_op`.
struct Library {
    name: String,
    code: String,
}

fn library() -> &'static Library {
    static LIBRARY: std::sync::OnceLock<Library> = std::sync::OnceLock::new();
    LIBRARY.get_or_init(|| {
        let name = format!("spool_{:016x}", codec::fingerprint(SOURCE.as_bytes()));
        Library {
            code: SOURCE.replace(PLACEHOLDER, &name),
            name,
        }
    })
}

/// A queue's keys, in the order of KEYS in `queue.lua`, which says what
/// each holds.
const KEYS: [&str; 11] = [
    "ready", "delayed", "leased", "data", "dead", "expiry", "state", "wake", "room", "waiting",
    "wanting",
];

/// Indexes in [`Core::keys`] of the keys the client reads itself.
const STATE: usize = 6;
const WAKE: usize = 7;
const ROOM: usize = 8;

/// A blocking caller as `queue.lua` reads it, in one argument: whether it
/// waited since its last call, whether it will wait if it must, its name.
fn caller_arg(waited: bool, will_wait: bool, who: &str) -> Vec<u8> {
    let flag = |on: bool| if on { b'1' } else { b'0' };
    let mut out = Vec::with_capacity(2 + who.len());
    out.extend_from_slice(&[flag(waited), flag(will_wait)]);
    out.extend_from_slice(who.as_bytes());
    out
}

/// Appends `bytes` to `out` as one argument of a request (a bulk string).
fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends a protocol header: `kind`, `n` in decimal, CRLF (by hand:
/// `write!` costs a few hundred instructions more, on every argument).
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(kind);
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The part of every request after its function: `numkeys key...
/// settings`.
fn keys_part(keys: &[String], settings: &str) -> Vec<u8> {
    let mut out = Vec::new();
    bulk(&mut out, keys.len().to_string().as_bytes());
    for key in keys {
        bulk(&mut out, key.as_bytes());
    }
    bulk(&mut out, settings.as_bytes());
    out
}

/// One queue on a Redis server, as this process's handles reach it: the
/// operations that know the message type; the others are [`Core`]'s.
pub(crate) struct Remote<T> {
    core: Arc<Core>,
    _message: PhantomData<fn() -> T>,
}

impl<T> std::ops::Deref for Remote<T> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// The connection and settings of a [`Remote`], whatever its message
/// type: what a settlement needs (and can take to a helper thread).
pub(crate) struct Core {
    name: Arc<str>,
    keys: Vec<String>,
    /// [`keys_part`], encoded once: the keys, and ARGV 1 of every call,
    /// the settings as `queue.lua` reads them.
    shared: Vec<u8>,
    capacity: usize,
    visibility_timeout: Duration,
    dedup_window: Duration,
    max_message_bytes: usize,
    random: Random,
    pool: Pool,
    /// Seen closed once: stays closed.
    closed: AtomicBool,
    /// This process's clock, for what runs here (a schedule's ticks); the
    /// queue's deadlines are the server's.
    clock: Arc<dyn crate::Clock>,
    /// Replicas that must have each change, and how long to wait for them
    /// (`Builder::redis_replicas`).
    replicas: Option<(u32, Duration)>,
}

/// Whether operation `op` changes the queue (and waits for replicas).
fn changes(op: &str) -> bool {
    !matches!(
        op,
        "stats" | "peek" | "letters" | "deadline" | "unwait" | "wake" | "init"
    )
}

/// Messages leased by one receive: one token for all of them.
pub(crate) struct Leased<T> {
    pub(crate) token: u64,
    pub(crate) entries: Vec<Held<T>>,
}

/// How a send ended, but for its message.
enum Sending {
    /// The script's reply: `ok` and the ids, `dup` or `conflict` and one.
    Done(Vec<Value>),
    Closed,
    Full,
    Timeout,
}

/// What a receive found.
enum Found<T> {
    Some(Leased<T>),
    Closed,
    /// Nothing ready; something comes due in this long, if anything will.
    Empty(Option<Duration>),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A delay or timeout in milliseconds that Lua's numbers (doubles) hold
/// exactly and that added to the server's clock stays below 2^53.
fn bounded_ms(d: Duration) -> u64 {
    ms(d).min(1 << 50)
}

impl<T: Message> Remote<T> {
    /// Opens queue `name` on the server at `url` (checking that it is
    /// reachable and that the queue was not made for another message
    /// type).
    pub(crate) fn open(
        url: &str,
        config: &Config,
        replicas: Option<(u32, Duration)>,
    ) -> Result<Arc<Self>, OpenError> {
        let name = Arc::clone(&config.name);
        let pool = Pool::new(url).map_err(OpenError::Storage)?;
        let tag = format!("spool:{{{name}}}");
        let keys: Vec<String> = KEYS.iter().map(|part| format!("{tag}:{part}")).collect();
        let (kind, a, b, jitter) = match config.backoff {
            Backoff::None => ("none", 0, 0, false),
            Backoff::Fixed(d) => ("fixed", bounded_ms(d), 0, false),
            Backoff::Exponential {
                initial,
                max,
                jitter,
            } => ("exp", bounded_ms(initial), bounded_ms(max), jitter),
        };
        let settings = format!(
            "{} {} {kind} {a} {b} {} {} {}",
            config.capacity,
            config.max_receives,
            u8::from(jitter),
            bounded_ms(config.dedup_window).max(1),
            u8::from(config.dedup_key_only),
        );
        let shared = keys_part(&keys, &settings);
        let core = Core {
            name,
            keys,
            shared,
            capacity: config.capacity,
            visibility_timeout: config.visibility_timeout,
            dedup_window: config.dedup_window,
            max_message_bytes: config.max_message_bytes,
            random: Random::new(crate::clock::to_nanos(SystemTime::now())),
            pool,
            closed: AtomicBool::new(false),
            clock: Arc::new(crate::SystemClock::new()),
            replicas,
        };
        let remote = Remote {
            core: Arc::new(core),
            _message: PhantomData,
        };
        remote.ensure_loaded().map_err(OpenError::Storage)?;
        remote.check_type()?;
        // Best effort: it only keeps the keys in their faster encodings, and
        // a read-only replica refuses it (its sends fail, typed, later).
        // After the check: a queue of another type or layout is not touched.
        let _ = remote.call("init", &[]);
        crate::observe::register_remote(&remote.core);
        Ok(Arc::new(remote))
    }

    /// The queue's keys record the layout ([`FORMAT`]) and the message type
    /// they were made for; another type is refused, as a persistent
    /// queue's file is, and so is another layout.
    fn check_type(&self) -> Result<(), OpenError> {
        let expected = crate::persist::type_fingerprint::<T>();
        let key = format!("spool:{{{}}}:format", self.name);
        // A read first: a server at maxmemory refuses the write, which
        // only a queue's first open needs.
        let found: Option<String> = self
            .pool
            .with("open", Duration::ZERO, |conn| {
                match ::redis::cmd("GET")
                    .arg(&key)
                    .query::<Option<String>>(conn)?
                {
                    Some(found) => Ok(Some(found)),
                    None => ::redis::cmd("SET")
                        .arg(&key)
                        .arg(format!("{FORMAT} {expected}"))
                        .arg("NX")
                        .arg("GET")
                        .query(conn),
                }
            })
            .map_err(OpenError::Storage)?;
        let Some(found) = found else {
            return Ok(());
        };
        let parsed = found.split_once(' ').and_then(|(format, fingerprint)| {
            Some((
                format.parse::<u32>().ok()?,
                fingerprint.parse::<u64>().ok()?,
            ))
        });
        match parsed {
            Some((format, _)) if format > FORMAT => Err(OpenError::UnsupportedFormat {
                file: key,
                found: format,
                supported: FORMAT,
            }),
            Some((format, _)) if format < FORMAT => Err(OpenError::OutdatedLayout {
                queue: self.name.to_string(),
                found: format,
                current: FORMAT,
            }),
            Some((_, fingerprint)) if fingerprint == expected => Ok(()),
            Some(_) => Err(OpenError::WrongMessageType {
                file: format!("redis queue {}", self.name),
            }),
            None => Err(OpenError::Storage(malformed("open", "the queue's format"))),
        }
    }
}

impl<T> Remote<T> {
    /// The part a helper thread can take.
    pub(crate) fn core(&self) -> Arc<Core> {
        Arc::clone(&self.core)
    }
}

impl Core {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn clock(&self) -> &Arc<dyn crate::Clock> {
        &self.clock
    }

    pub(crate) fn dedup_window(&self) -> Duration {
        self.dedup_window
    }

    /// Loads the function library (replacing an older copy of the same
    /// version).
    fn load(&self) -> Result<(), StorageError> {
        self.pool.with("load", Duration::ZERO, |conn| {
            ::redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(&library().code)
                .query::<Value>(conn)
                .map(drop)
        })
    }

    /// Loads the library unless the server has it already (a server at
    /// `maxmemory` refuses a load, but a process must still be able to
    /// open the queue to drain it).
    fn ensure_loaded(&self) -> Result<(), StorageError> {
        let listed = self.pool.with("load", Duration::ZERO, |conn| {
            ::redis::cmd("FUNCTION")
                .arg("LIST")
                .arg("LIBRARYNAME")
                .arg(&library().name)
                .query::<Value>(conn)
        })?;
        match listed {
            Value::Array(libraries) if !libraries.is_empty() => Ok(()),
            _ => self.load(),
        }
    }

    /// One call of the library: operation `op` with its own `args`. A
    /// server that lost the library (restarted without persistence,
    /// `FUNCTION FLUSH`) gets it again.
    fn call(&self, op: &'static str, args: &[&[u8]]) -> Result<Value, StorageError> {
        match self.call_once(op, args) {
            Err(error) if error.to_string().contains("Function not found") => {
                self.load()?;
                self.call_once(op, args)
            }
            other => other,
        }
    }

    /// The request for `op` with `args`, in the protocol's bytes: `FCALL
    /// library_op`, then the part every call shares (keys, settings),
    /// encoded once at open, then `args`.
    fn request(&self, op: &str, args: &[&[u8]]) -> Vec<u8> {
        let name = &library().name;
        let size = 32 + name.len() + op.len() + self.shared.len();
        let size = size + args.iter().map(|a| a.len() + 16).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        let count = 3 + self.keys.len() + 1 + args.len();
        header(&mut out, b'*', count);
        bulk(&mut out, b"FCALL");
        header(&mut out, b'$', name.len() + 1 + op.len());
        out.extend_from_slice(name.as_bytes());
        out.push(b'_');
        out.extend_from_slice(op.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.shared);
        for arg in args {
            bulk(&mut out, arg);
        }
        out
    }

    fn call_once(&self, op: &'static str, args: &[&[u8]]) -> Result<Value, StorageError> {
        let replicas = self.replicas.filter(|_| changes(op));
        let extra = replicas.map_or(Duration::ZERO, |(_, timeout)| timeout);
        let reply = self.pool.with(op, extra, |conn| {
            let request = self.request(op, args);
            let reply = ::redis::ConnectionLike::req_packed_command(conn, &request)?;
            let reply = reply.extract_error()?;
            let Some((wanted, timeout)) = replicas else {
                return Ok((reply, None));
            };
            let acknowledged: i64 = ::redis::cmd("WAIT")
                .arg(wanted)
                .arg(ms(timeout).max(1))
                .query(conn)?;
            Ok((reply, Some((acknowledged, wanted))))
        })?;
        match reply {
            (_, Some((acknowledged, wanted))) if acknowledged < i64::from(wanted) => {
                Err(WalError::Remote {
                    backend: BACKEND,
                    operation: op,
                    message: format!(
                        "made on the primary, but only {acknowledged} of {wanted} replicas \
                         acknowledged it in time"
                    ),
                    unreachable: false,
                }
                .into())
            }
            (reply, _) => Ok(reply),
        }
    }

    /// A caller counted as waiting on `list` gives up (it will not call
    /// again, which would have uncounted it).
    fn unwait(&self, list: &str, who: &str) {
        let _ = self.call("unwait", &[list.as_bytes(), who.as_bytes()]);
    }

    /// A name for one blocked caller, unique while it waits.
    fn caller(&self) -> String {
        format!("{:x}", self.random.below(u64::MAX))
    }

    /// Waits on wake-up list `list` ([`WAKE`] receivers, [`ROOM`] senders) for at most
    /// `wait` (and [`POLL`]).
    fn block(&self, list: usize, wait: Duration) -> Result<(), StorageError> {
        let wait = wait.min(POLL).max(Duration::from_millis(1));
        // The server times blocked clients out on its `hz` tick (100 ms by
        // default): a shorter wait sleeps here instead, and looks again.
        if wait < Duration::from_millis(100) {
            std::thread::sleep(wait);
            return Ok(());
        }
        let key = &self.keys[list];
        self.pool.with("wait", wait, |conn| {
            ::redis::cmd("BLPOP")
                .arg(key)
                .arg(wait.as_secs_f64())
                .query::<Value>(conn)
                .map(drop)
        })
    }

    /// How long `wait` still allows, `None` for ever; `Some(ZERO)` once
    /// it has run out.
    fn remaining(wait: &Wait) -> Option<Duration> {
        match wait {
            Wait::No => Some(Duration::ZERO),
            Wait::Forever => None,
            Wait::Until(at) => Some(at.saturating_duration_since(Instant::now())),
        }
    }
}

impl<T: Message> Remote<T> {
    // ---- sending ----

    /// One message's arguments of `send` (see `queue.lua`): how many
    /// ("1"), then its payload; or, when it has options, "o", its payload
    /// and its options.
    fn message_args(bytes: Vec<u8>, options: &SendOptions) -> Vec<Vec<u8>> {
        let plain = options.key.is_none()
            && options.at.is_none()
            && options.delay.is_zero()
            && options.max_receives.is_none()
            && options.ttl.is_none();
        if plain {
            vec![b"1".to_vec(), bytes]
        } else {
            use std::fmt::Write as _;
            let mut text = String::new();
            let _ = write!(
                text,
                "{} {} ",
                u8::from(options.any_payload),
                bounded_ms(options.delay)
            );
            if let Some(at) = options.at {
                let ms = (crate::clock::to_nanos(at) / 1_000_000).min(1 << 50);
                let _ = write!(text, "{ms}");
            }
            text.push(' ');
            if let Some(max) = options.max_receives {
                let _ = write!(text, "{max}");
            }
            text.push(' ');
            if let Some(ttl) = options.ttl {
                let _ = write!(text, "{}", bounded_ms(ttl));
            }
            let _ = write!(text, " {} ", codec::fingerprint(&bytes));
            // '' is no key, 'k' and the key a key (the empty one included).
            if let Some(key) = options.key.as_deref() {
                text.push('k');
                text.push_str(key);
            }
            vec![b"o".to_vec(), bytes, text.into_bytes()]
        }
    }

    fn encode(&self, message: &T) -> Result<Vec<u8>, (String, Option<usize>)> {
        let bytes = codec::encode(message).map_err(|e| (e, None))?;
        if bytes.len() > self.max_message_bytes {
            return Err((String::new(), Some(bytes.len())));
        }
        Ok(bytes)
    }

    pub(crate) fn send(
        &self,
        message: T,
        options: SendOptions,
        wait: Wait,
    ) -> Result<Sent, SendError<T>> {
        if options.ordering().is_some() {
            let what = "priorities and message groups";
            let error = StorageError::unsupported(BACKEND, what);
            return Err(SendError::Storage { message, error });
        }
        if let Some(key) = &options.key {
            if key.len() > MAX_KEY_BYTES {
                let len = key.len();
                return Err(SendError::KeyTooLong {
                    message,
                    len,
                    max: MAX_KEY_BYTES,
                });
            }
        }
        let bytes = match self.encode(&message) {
            Ok(bytes) => bytes,
            Err((reason, None)) => return Err(SendError::Encode { message, reason }),
            Err((_, Some(size))) => {
                let max = self.max_message_bytes;
                return Err(SendError::TooLarge { message, size, max });
            }
        };
        let args = Self::message_args(bytes, &options);
        let fail = |message, error| SendError::Storage { message, error };
        match self.send_waiting(args, &wait) {
            Ok(Sending::Done(reply)) => match reply.as_slice() {
                [tag, id, ..] => {
                    let id = match wire::id(id, "send") {
                        Ok(id) => id,
                        Err(error) => return Err(fail(message, error)),
                    };
                    match wire::text(tag, "send").as_deref() {
                        Ok("ok") => Ok(Sent::Enqueued(id)),
                        Ok("dup") => Ok(Sent::Duplicate(id)),
                        Ok("conflict") => Err(SendError::KeyConflict {
                            message,
                            original: id,
                        }),
                        _ => Err(fail(message, malformed("send", "a send's outcome"))),
                    }
                }
                _ => Err(fail(message, malformed("send", "a send's outcome"))),
            },
            Ok(Sending::Closed) => Err(SendError::Closed(message)),
            Ok(Sending::Full) => Err(SendError::Full(message)),
            Ok(Sending::Timeout) => Err(SendError::Timeout(message)),
            Err(error) => Err(fail(message, error)),
        }
    }

    /// Sends with `args` (see `queue.lua`; the caller, its second, is
    /// added here), waiting for room as `wait` says.
    fn send_waiting(&self, mut args: Vec<Vec<u8>>, wait: &Wait) -> Result<Sending, StorageError> {
        let who = self.caller();
        args.insert(1, Vec::new());
        let mut waited = false;
        loop {
            let left = Core::remaining(wait);
            let will_wait = left != Some(Duration::ZERO);
            args[1] = caller_arg(waited, will_wait, &who);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let reply = wire::items(self.call("send", &refs)?, "send")?;
            let tag = reply.first().ok_or_else(|| malformed("send", "nothing"));
            match wire::text(tag?, "send")?.as_str() {
                "full" if will_wait => {
                    waited = true;
                    if let Err(error) = self.block(ROOM, left.unwrap_or(POLL)) {
                        self.unwait("room", &who);
                        return Err(error);
                    }
                }
                "full" if matches!(wait, Wait::No) => return Ok(Sending::Full),
                "full" => return Ok(Sending::Timeout),
                "closed" => {
                    self.closed.store(true, Relaxed);
                    return Ok(Sending::Closed);
                }
                _ => return Ok(Sending::Done(reply)),
            }
        }
    }

    pub(crate) fn send_batch(
        &self,
        messages: Vec<T>,
        wait: Wait,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        if messages.len() > self.capacity {
            return Err(SendError::Full(messages));
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // How many, then the payloads (a batch's messages have no options).
        let mut args = Vec::with_capacity(messages.len() + 1);
        args.push(messages.len().to_string().into_bytes());
        for message in &messages {
            match self.encode(message) {
                Ok(bytes) => args.push(bytes),
                Err((reason, None)) => {
                    return Err(SendError::Encode {
                        message: messages,
                        reason,
                    })
                }
                Err((_, Some(size))) => {
                    let max = self.max_message_bytes;
                    return Err(SendError::TooLarge {
                        message: messages,
                        size,
                        max,
                    });
                }
            }
        }
        let fail = |message, error| SendError::Storage { message, error };
        match self.send_waiting(args, &wait) {
            Ok(Sending::Done(reply)) => {
                let tag = reply.first().map(|t| wire::text(t, "send"));
                if !matches!(tag, Some(Ok(ref tag)) if tag == "ok") {
                    return Err(fail(messages, malformed("send", "a batch's outcome")));
                }
                // The ids are consecutive: the first, and how many.
                let first = reply.get(1).map(|v| wire::id(v, "send"));
                // (A batch of one takes the single send's path, whose
                // reply has no count.)
                let count = reply.get(2).map_or(Ok(1), |v| wire::int(v, "send"));
                match (first, count) {
                    (Some(Ok(first)), Ok(count)) if count == messages.len() as i64 => {
                        Ok((0..count as u64).map(|i| MessageId(first.0 + i)).collect())
                    }
                    _ => Err(fail(messages, malformed("send", "a batch's ids"))),
                }
            }
            Ok(Sending::Closed) => Err(SendError::Closed(messages)),
            Ok(Sending::Full) => Err(SendError::Full(messages)),
            Ok(Sending::Timeout) => Err(SendError::Timeout(messages)),
            Err(error) => Err(fail(messages, error)),
        }
    }

    // ---- receiving ----

    /// One receive call: `waited` says this caller blocked since its last
    /// call, `will_wait` that it will block if nothing is ready (it is
    /// then counted as waiting, so that a send wakes it).
    fn try_lease(
        &self,
        max: usize,
        who: &str,
        waited: bool,
        will_wait: bool,
    ) -> Result<Found<T>, StorageError> {
        let visibility = bounded_ms(self.visibility_timeout).max(1).to_string();
        let max = max.clamp(1, MAX_BATCH).to_string();
        let caller = caller_arg(waited, will_wait, who);
        let args = [visibility.as_bytes(), max.as_bytes(), &caller];
        let reply = wire::items(self.call("recv", &args)?, "recv")?;
        let tag = wire::text(
            reply.first().ok_or_else(|| malformed("recv", "nothing"))?,
            "recv",
        )?;
        match tag.as_str() {
            "ok" => {
                let token = u64::try_from(wire::int(wire::at(&reply, 1, "recv")?, "recv")?)
                    .map_err(|_| malformed("recv", "a token"))?;
                let mut entries = Vec::with_capacity(reply.len() / 2);
                for pair in reply[2..].chunks_exact(2) {
                    let (id, payload, meta) = self.message(&pair[0], &pair[1], "recv")?;
                    entries.push(meta.into_held(id, payload));
                }
                Ok(Found::Some(Leased { token, entries }))
            }
            "closed" => {
                self.closed.store(true, Relaxed);
                Ok(Found::Closed)
            }
            "empty" => {
                let due = wire::int(wire::at(&reply, 1, "recv")?, "recv")?;
                let now = wire::int(wire::at(&reply, 2, "recv")?, "recv")?;
                let next = (due >= 0)
                    .then(|| Duration::from_millis(due.saturating_sub(now).max(1) as u64));
                Ok(Found::Empty(next))
            }
            other => Err(malformed("recv", other)),
        }
    }

    /// Leases up to `max` messages, waiting as `wait` says; `stop` ends
    /// the wait early with `Ok(None)` (a worker pool's flags).
    pub(crate) fn receive(
        &self,
        max: usize,
        wait: Wait,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Leased<T>>, RecvError> {
        let who = self.caller();
        let mut waited = false;
        loop {
            let left = Core::remaining(&wait);
            let will_wait = left != Some(Duration::ZERO);
            let next = match self.try_lease(max, &who, waited, will_wait) {
                Ok(Found::Some(leased)) => return Ok(Some(leased)),
                Ok(Found::Closed) => return Err(RecvError::Closed),
                Ok(Found::Empty(next)) => next,
                Err(error) => return Err(RecvError::Storage(error)),
            };
            if !will_wait {
                return Err(if matches!(wait, Wait::No) {
                    RecvError::Empty
                } else {
                    RecvError::Timeout
                });
            }
            if stop() {
                self.unwait("wake", &who);
                return Ok(None);
            }
            let left = left.unwrap_or(POLL);
            let nap = next.map_or(left, |next| next.min(left));
            if let Err(error) = self.block(WAKE, nap) {
                self.unwait("wake", &who);
                return Err(RecvError::Storage(error));
            }
            waited = true;
        }
    }
}

impl Core {
    /// Whether a closed queue has nothing ready or delayed left (a worker
    /// pool's "until idle").
    pub(crate) fn drained(&self) -> Result<bool, StorageError> {
        let stats = self.stats()?;
        Ok(stats.ready == 0 && stats.delayed == 0)
    }

    // ---- settling ----

    /// Runs settlement `op` on `ids` under `token` with `args` before the
    /// ids; returns how many it settled, or `LeaseExpired` naming the
    /// first id it could not.
    fn settle(
        &self,
        op: &'static str,
        token: u64,
        args: &[&[u8]],
        ids: &[MessageId],
    ) -> Result<(usize, Option<MessageId>), SettleError> {
        let token = token.to_string();
        let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
        let mut all: Vec<&[u8]> = vec![token.as_bytes()];
        all.extend_from_slice(args);
        all.extend(ids.iter().map(|id| id.as_bytes()));
        let reply = self.call(op, &all).and_then(|r| wire::items(r, op));
        let reply = reply.map_err(SettleError::Storage)?;
        let done = wire::int(
            reply
                .first()
                .ok_or_else(|| malformed(op, "nothing"))
                .map_err(SettleError::Storage)?,
            op,
        )
        .map_err(SettleError::Storage)?;
        let lost = match reply.get(1) {
            Some(value) => wire::int(value, op).map_err(SettleError::Storage)?,
            None => 0,
        };
        let lost = (lost > 0).then_some(MessageId(lost as u64));
        Ok((usize::try_from(done).unwrap_or(0), lost))
    }

    /// Settles one lease of all of `ids`: `LeaseExpired` if the first is
    /// no longer held (a batch's lease names its first).
    fn settle_all(
        &self,
        op: &'static str,
        token: u64,
        args: &[&[u8]],
        ids: &[MessageId],
    ) -> Result<(), SettleError> {
        let (done, lost) = self.settle(op, token, args, ids)?;
        match lost {
            Some(id) if done == 0 || ids.first() == Some(&id) => {
                Err(SettleError::LeaseExpired { id })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn ack(&self, token: u64, ids: &[MessageId]) -> Result<(), SettleError> {
        self.settle_all("ack", token, &[], ids)
    }

    /// Acknowledges every lease of `leases` still held; returns how many.
    pub(crate) fn ack_each(&self, leases: &[(MessageId, u64)]) -> Result<usize, SettleError> {
        let mut acked = 0;
        // One call per token: leases from one batch share theirs.
        let mut rest = leases.to_vec();
        rest.sort_by_key(|(_, token)| *token);
        for group in rest.chunk_by(|a, b| a.1 == b.1) {
            let ids: Vec<MessageId> = group.iter().map(|(id, _)| *id).collect();
            acked += self.settle("ack", group[0].1, &[], &ids)?.0;
        }
        Ok(acked)
    }

    pub(crate) fn release(
        &self,
        token: u64,
        ids: &[MessageId],
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), SettleError> {
        let delay = delay.map(|d| bounded_ms(d).to_string()).unwrap_or_default();
        let has_error = if error.is_some() { "1" } else { "0" };
        let text = error.unwrap_or_default();
        let args = [delay.as_bytes(), has_error.as_bytes(), text.as_bytes()];
        self.settle_all("release", token, &args, ids)
    }

    pub(crate) fn reject(
        &self,
        token: u64,
        ids: &[MessageId],
        reason: String,
    ) -> Result<(), SettleError> {
        self.settle_all("reject", token, &[reason.as_bytes()], ids)
    }

    /// Keeps the lease for `by` from now (the server's); returns the new
    /// deadline.
    pub(crate) fn extend(
        &self,
        token: u64,
        ids: &[MessageId],
        by: Duration,
    ) -> Result<Nanos, SettleError> {
        let by = bounded_ms(by).to_string();
        let (deadline, lost) = self.settle("extend", token, &[by.as_bytes()], ids)?;
        match lost {
            Some(id) if ids.first() == Some(&id) => Err(SettleError::LeaseExpired { id }),
            _ => Ok(wire::nanos(deadline as i64)),
        }
    }

    /// The lease's deadline, if `token` still holds `id`.
    pub(crate) fn deadline(&self, id: MessageId, token: u64) -> Option<Nanos> {
        let (token, id) = (token.to_string(), id.0.to_string());
        let reply = self
            .call("deadline", &[token.as_bytes(), id.as_bytes()])
            .ok()?;
        let at = wire::int(&reply, "deadline").ok()?;
        (at >= 0).then(|| wire::nanos(at))
    }

    // ---- the queue ----

    pub(crate) fn stats(&self) -> Result<Stats, StorageError> {
        let reply = wire::items(self.call("stats", &[])?, "stats")?;
        if reply.len() < 8 {
            return Err(malformed("stats", "too short"));
        }
        let count =
            |i: usize| wire::int(&reply[i], "stats").map(|n| usize::try_from(n).unwrap_or(0));
        let mut stats = Stats {
            capacity: self.capacity,
            ready: count(0)?,
            delayed: count(1)?,
            in_flight: count(2)?,
            dead_letters: count(3)?,
            ..Stats::default()
        };
        let oldest = wire::int(&reply[4], "stats")?;
        let now = wire::int(&reply[5], "stats")?;
        if oldest >= 0 {
            stats.oldest_ready_age = Some(Duration::from_millis(
                now.saturating_sub(oldest).max(0) as u64
            ));
        }
        if wire::int(&reply[6], "stats")? == 1 {
            self.closed.store(true, Relaxed);
        }
        let counters = match &reply[7] {
            Value::Array(items) => items.clone(),
            Value::Map(pairs) => pairs
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            _ => Vec::new(),
        };
        for pair in counters.chunks(2) {
            let [name, value] = pair else { continue };
            let value = u64::try_from(wire::int(value, "stats")?).unwrap_or(0);
            match wire::text(name, "stats")?.as_str() {
                "sent" => stats.sent = value,
                "duplicates" => stats.duplicates = value,
                "acked" => stats.acked = value,
                "nacked" => stats.nacked = value,
                "expired" => stats.expired = value,
                "dead_lettered" => stats.dead_lettered = value,
                "redriven" => stats.redriven = value,
                "purged" => stats.purged = value,
                "cancelled" => stats.cancelled = value,
                _ => {}
            }
        }
        Ok(stats)
    }

    pub(crate) fn close(&self) -> Result<(), StorageError> {
        self.call("close", &[])?;
        self.closed.store(true, Relaxed);
        Ok(())
    }

    /// Whether the queue is closed, as this process last saw it or the
    /// server says now (a failed call answers `false`).
    pub(crate) fn is_closed(&self) -> bool {
        if self.closed.load(Relaxed) {
            return true;
        }
        let state = &self.keys[STATE];
        let flag = self.pool.with("closed", Duration::ZERO, |conn| {
            ::redis::cmd("HGET")
                .arg(state)
                .arg("closed")
                .query::<Option<String>>(conn)
        });
        let closed = flag.is_ok_and(|flag| flag.as_deref() == Some("1"));
        if closed {
            self.closed.store(true, Relaxed);
        }
        closed
    }
}

impl<T: Message> Remote<T> {
    pub(crate) fn peek(&self, max: usize) -> Result<Vec<Peeked<T>>, StorageError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = max.min(1 << 20).to_string();
        let reply = wire::items(self.call("peek", &[max.as_bytes()])?, "peek")?;
        let found = self.described(reply, "peek")?;
        Ok(found
            .into_iter()
            .map(|(id, message, meta)| Peeked {
                id,
                receive_count: meta.receive_count,
                enqueued_at: crate::clock::from_nanos(meta.enqueued_at),
                message,
            })
            .collect())
    }

    /// Decodes the messages of a reply: id and record of each.
    fn described(
        &self,
        reply: Vec<Value>,
        op: &'static str,
    ) -> Result<Vec<(MessageId, T, wire::Meta)>, StorageError> {
        reply
            .chunks_exact(2)
            .map(|pair| self.message(&pair[0], &pair[1], op))
            .collect()
    }

    /// A message as the server gave it: its id and its record (metadata
    /// and payload, see `queue.lua`).
    fn message(
        &self,
        id: &Value,
        record: &Value,
        op: &'static str,
    ) -> Result<(MessageId, T, wire::Meta), StorageError> {
        let id = wire::id(id, op)?;
        let record = wire::bytes(record, op)?;
        let (meta, payload) = wire::Meta::parse_record(record, op)?;
        let payload = codec::decode::<T>(&record[payload..])
            .map_err(|e| malformed(op, &format!("message {id} does not decode: {e}")))?;
        Ok((id, payload, meta))
    }

    fn letters(
        &self,
        op: &'static str,
        id: Option<MessageId>,
    ) -> Result<Vec<DeadLetter<T>>, StorageError> {
        let which = id.map(|id| id.0.to_string()).unwrap_or_default();
        let reply = wire::items(self.call(op, &[which.as_bytes()])?, op)?;
        Ok(self
            .described(reply, op)?
            .into_iter()
            .map(|(id, payload, mut meta)| {
                let dead = meta.dead.take();
                let (reason, at) = dead.unwrap_or((crate::DeadLetterReason::Expired, 0));
                DeadLetter::new(meta.into_held(id, payload), reason, at)
            })
            .collect())
    }

    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter<T>>, StorageError> {
        self.letters("letters", None)
    }

    pub(crate) fn dead_letter(&self, id: MessageId) -> Result<Option<DeadLetter<T>>, StorageError> {
        Ok(self.letters("letters", Some(id))?.pop())
    }

    pub(crate) fn remove_dead_letter(
        &self,
        id: MessageId,
    ) -> Result<Option<DeadLetter<T>>, StorageError> {
        Ok(self.letters("remove", Some(id))?.pop())
    }

    pub(crate) fn purge(&self) -> Result<usize, StorageError> {
        Ok(self.letters("remove", None)?.len())
    }

    /// Redrives `ids` in order (one id: `NotFound` if it is not a dead
    /// letter), with `fixed` as the payload if given.
    pub(crate) fn redrive(
        &self,
        ids: &[MessageId],
        fixed: Option<T>,
    ) -> Result<usize, RedriveError> {
        let payload = match &fixed {
            Some(fixed) => match self.encode(fixed) {
                Ok(bytes) => bytes,
                Err((reason, None)) => return Err(RedriveError::Encode(reason)),
                Err((_, Some(size))) => {
                    let max = self.max_message_bytes;
                    return Err(RedriveError::TooLarge { size, max });
                }
            },
            None => Vec::new(),
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
        self.redrive_ids(&ids, &payload, fixed.is_some())
    }

    /// Redrives every dead letter, in id order, chosen on the server (no
    /// payload crosses the network).
    pub(crate) fn redrive_all(&self) -> Result<usize, RedriveError> {
        self.redrive_ids(&["*".to_owned()], &[], false)
    }

    /// The `redrive` call: `ids` (or `*`), and the corrected payload if
    /// `fixed`.
    fn redrive_ids(
        &self,
        ids: &[String],
        payload: &[u8],
        fixed: bool,
    ) -> Result<usize, RedriveError> {
        let has = if fixed { "1" } else { "0" };
        let mut args: Vec<&[u8]> = vec![has.as_bytes(), payload];
        args.extend(ids.iter().map(|id| id.as_bytes()));
        let reply = self
            .call("redrive", &args)
            .and_then(|r| wire::items(r, "redrive"));
        let reply = reply.map_err(RedriveError::Storage)?;
        let tag = reply
            .first()
            .map(|t| wire::text(t, "redrive"))
            .transpose()
            .map_err(RedriveError::Storage)?;
        let n = || -> Result<usize, RedriveError> {
            let n = wire::int(
                reply
                    .get(1)
                    .ok_or(RedriveError::Storage(malformed("redrive", "nothing")))?,
                "redrive",
            );
            Ok(usize::try_from(n.map_err(RedriveError::Storage)?).unwrap_or(0))
        };
        match tag.as_deref() {
            Some("ok") => n(),
            Some("full") => Err(RedriveError::Full { redriven: n()? }),
            Some("closed") => Err(RedriveError::Closed),
            Some("missing") => {
                let id = wire::at(&reply, 1, "redrive")
                    .and_then(|v| wire::id(v, "redrive"))
                    .map_err(RedriveError::Storage)?;
                Err(RedriveError::NotFound(id))
            }
            _ => Err(RedriveError::Storage(malformed("redrive", "an outcome"))),
        }
    }
}

impl Core {
    fn cancel_by(&self, kind: &str, which: &str) -> Result<(MessageId, Cancelled), CancelError> {
        let reply = self.call("cancel", &[kind.as_bytes(), which.as_bytes()]);
        let reply = reply
            .and_then(|r| wire::items(r, "cancel"))
            .map_err(CancelError::Storage)?;
        let tag = reply
            .first()
            .map(|t| wire::text(t, "cancel"))
            .transpose()
            .map_err(CancelError::Storage)?;
        let id = || -> Result<MessageId, CancelError> {
            let value = reply
                .get(1)
                .ok_or(CancelError::Storage(malformed("cancel", "no id")))?;
            wire::id(value, "cancel").map_err(CancelError::Storage)
        };
        match tag.as_deref() {
            Some("ready") => Ok((id()?, Cancelled::Ready)),
            Some("delayed") => Ok((id()?, Cancelled::Delayed)),
            Some("missing") => Err(CancelError::NotFound(id()?)),
            Some("unknown") => Err(CancelError::UnknownKey(which.to_owned())),
            _ => Err(CancelError::Storage(malformed("cancel", "an outcome"))),
        }
    }

    pub(crate) fn cancel(&self, id: MessageId) -> Result<Cancelled, CancelError> {
        self.cancel_by("id", &id.0.to_string())
            .map(|(_, where_)| where_)
    }

    pub(crate) fn cancel_key(&self, key: &str) -> Result<(MessageId, Cancelled), CancelError> {
        self.cancel_by("key", key)
    }

    /// Releases a lease on a helper thread (a delivery dropped unsettled:
    /// a drop does not wait on the network). A failure changes nothing:
    /// the lease then runs out.
    pub(crate) fn release_later(self: &Arc<Self>, token: u64, ids: Vec<MessageId>) {
        let core = Arc::clone(self);
        drop(offload(move || core.release(token, &ids, None, None)));
    }

    /// Undoes a receive whose caller is gone, on a helper thread: its
    /// messages go back to the front of the ready queue with their
    /// receive counts as they were. A failure changes nothing: the lease
    /// then runs out (and counts as an attempt).
    pub(crate) fn unreceive_later(self: &Arc<Self>, token: u64, ids: Vec<MessageId>) {
        let core = Arc::clone(self);
        drop(offload(move || core.settle("unreceive", token, &[], &ids)));
    }

    /// Wakes this queue's blocked receivers (a worker pool stopping):
    /// they look at their flags at once instead of within [`POLL`].
    pub(crate) fn wake_consumers(&self) {
        let _ = self.call("wake", &[b"64"]);
    }
}
