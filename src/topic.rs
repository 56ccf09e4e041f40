//! Fan-out: one published message, one copy in every subscription.
//!
//! A [`Topic`] is a list of named subscriptions, each a complete spool
//! [`Queue`] with its own capacity, leases, retries, backoff and dead-letter
//! queue. Publishing puts a clone of the message into every subscription;
//! from then on each copy lives its own life, so a subscriber that fails or
//! falls behind affects no other.
//!
//! # How a publish runs
//!
//! 1. It takes a snapshot of the subscription list (a read lock held for a
//!    moment), so subscribing never waits for a blocked publisher and a
//!    publisher never sees half a subscribe. A subscription whose
//!    `subscribe` returned before the publish started is in the snapshot.
//! 2. It offers the message to every subscription without waiting
//!    ([`Producer::try_send_with`]), cloning it for all but the last.
//! 3. Only [`publish`](Topic::publish) goes on: it waits, in subscription
//!    order, on each subscription that was full. So subscriptions with room
//!    have the message at once, even while the publisher waits for a full
//!    one.
//!
//! A message is never half-accepted silently: whatever did not reach a
//! subscription comes back in a [`PublishError::Refused`] that names it.
//!
//! The rules users rely on (publish order, names) are on [`Topic`].

use crate::builder::Builder;
use crate::error::{OpenError, SendError};
use crate::message::MessageId;
use crate::producer::{Producer, SendOptions, Sent};
use crate::queue::Queue;
use crate::Message;
use parking_lot::{Mutex, RwLock};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

/// The longest subscription name, in bytes.
pub const MAX_SUBSCRIPTION_NAME: usize = 64;

/// Publishes each message to every subscription: one event, several
/// independent consumers.
///
/// Each subscription is a full [`Queue`] opened from the [`Builder`] given
/// to [`subscribe`](Self::subscribe), so each has its own capacity,
/// visibility timeout, retries, backoff and dead-letter queue. A message
/// that fails in one subscription is retried and dead-lettered there only.
///
/// | situation | what happens |
/// |---|---|
/// | `publish` | a clone in every subscription; blocks while one of them is full |
/// | `try_publish`, some subscriptions full | the others get it now; `Err(Refused)` names the full ones and gives the message back |
/// | same idempotency key again | `Sent::Duplicate` in every subscription that has seen the key |
/// | subscription added later | gets messages published after `subscribe` returned |
/// | no subscriptions | `Ok` with an empty [`Published`]: nobody was listening |
/// | a subscription's queue closed | refused there (`Refusal::Closed`), delivered elsewhere |
/// | [`close`](Self::close) | every subscription queue closes; consumers drain, then see `Closed` |
///
/// # How a publish runs
///
/// 1. It takes a snapshot of the subscription list: a subscription whose
///    `subscribe` returned before the publish started gets the message.
/// 2. It offers the message to every subscription without waiting,
///    cloning it for all but the last.
/// 3. [`publish`](Self::publish) then waits, in subscription order, on each
///    subscription that was full. So subscriptions with room have the
///    message at once, even while the publisher waits for a full one: a
///    stuck subscriber delays nobody until its queue is full, and then only
///    the publisher (backpressure), never the other subscribers' copies.
///
/// # Subscription names
///
/// A persistent topic ([`Topic::with_path`]) keeps each subscription in the
/// directory `<topic path>/<name>`, so names are restricted to what is a safe
/// directory name on every common file system: 1 to
/// [`MAX_SUBSCRIPTION_NAME`] (64) bytes of lowercase ASCII letters, digits,
/// `-` and `_`, starting with a letter or a digit, and not a reserved
/// Windows device name (`con`, `prn`, `aux`, `nul`, `com1`–`com9`,
/// `lpt1`–`lpt9`). Lowercase only, so that two names never meet on a
/// case-insensitive file system; no `.`, so never `.`, `..` or hidden.
///
/// Cloning a `Topic` gives another handle on the same subscriptions.
/// Messages are cloned once per subscription (the last one gets the
/// original), hence `T: Clone`; make large payloads cheap to clone.
///
/// ```
/// use spool::{Queue, Topic};
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Uploaded { video_id: u64 }
///
/// let topic: Topic<Uploaded> = Topic::new();
/// let thumbnails = topic.subscribe("thumbnail", Queue::builder().capacity(100))?;
/// let moderation = topic.subscribe("moderation", Queue::builder().max_receives(3))?;
///
/// let published = topic.publish(Uploaded { video_id: 42 })?;
/// assert_eq!(published.len(), 2);
///
/// // Each subscription has its own copy, leases and retries.
/// let job = moderation.consumer().try_recv()?;
/// job.fail("classifier offline")?; // retried in `moderation` only
/// let thumb = thumbnails.consumer().try_recv()?;
/// assert_eq!(thumb.video_id, 42);
/// thumb.ack()?;
/// assert_eq!(moderation.stats().delayed, 1); // for the queue's backoff
/// assert_eq!(thumbnails.stats().acked, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Topic<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    /// Where a persistent topic keeps its subscriptions, one directory each.
    path: Option<PathBuf>,
    subscriptions: RwLock<Vec<Arc<Subscription<T>>>>,
    /// Serialises `subscribe`, so the name check and the insert agree while
    /// the queue is opened outside the list's lock.
    subscribing: Mutex<()>,
    closed: AtomicBool,
}

struct Subscription<T> {
    name: Arc<str>,
    queue: Queue<T>,
    producer: Producer<T>,
}

impl<T: Message + Clone> Topic<T> {
    /// A topic with no subscriptions, in memory.
    pub fn new() -> Self {
        Self::with_path_option(None)
    }

    /// A persistent topic: each subscription is a persistent queue in the
    /// directory `<path>/<name>` (unless its builder names another path),
    /// opened with the durability its builder gives ([`Durability::Sync`]
    /// by default). Subscribing again under the same name after a restart
    /// reopens that subscription with everything it held.
    ///
    /// Under `Sync`, [`publish`](Self::publish) returns only once the
    /// message is on disk in every subscription that accepted it.
    ///
    /// ```
    /// use spool::{Queue, Topic};
    ///
    /// let dir = std::env::temp_dir().join(format!("spool-topic-doc-{}", std::process::id()));
    /// {
    ///     let topic: Topic<String> = Topic::with_path(&dir);
    ///     topic.subscribe("mailer", Queue::builder())?;
    ///     topic.publish("welcome alice".to_string())?;
    /// } // the process may stop here, cleanly or not
    /// let topic: Topic<String> = Topic::with_path(&dir);
    /// let mailer = topic.subscribe("mailer", Queue::builder())?;
    /// assert_eq!(*mailer.consumer().try_recv()?, "welcome alice");
    /// # drop((mailer, topic));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`Durability::Sync`]: crate::Durability::Sync
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self::with_path_option(Some(path.into()))
    }

    fn with_path_option(path: Option<PathBuf>) -> Self {
        Topic {
            inner: Arc::new(Inner {
                path,
                subscriptions: RwLock::new(Vec::new()),
                subscribing: Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Adds a subscription named `name`, a queue opened from `builder`, and
    /// returns that queue. It receives every message published after this
    /// returns; earlier messages are not replayed.
    ///
    /// `name` must follow the [naming rule](Topic#subscription-names) (lowercase
    /// letters, digits, `-`, `_`; at most 64 bytes). The topic keeps a
    /// handle on the queue, so it stays open (consumers block rather than
    /// see `Closed`) until [`close`](Self::close), or until the subscription
    /// is gone from the topic ([`unsubscribe`](Self::unsubscribe), or the
    /// last `Topic` handle dropped) and the `Queue` handles it returned are
    /// dropped too.
    pub fn subscribe(&self, name: &str, builder: Builder<T>) -> Result<Queue<T>, SubscribeError> {
        validate_name(name).map_err(|reason| SubscribeError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let _one_at_a_time = self.inner.subscribing.lock();
        if self.is_closed() {
            return Err(SubscribeError::Closed);
        }
        if self.find(name).is_some() {
            return Err(SubscribeError::Duplicate(name.to_owned()));
        }
        // Opened without holding the list's lock: publishers go on meanwhile
        // (and a persistent open may take a while to recover).
        let queue = self.open_subscription(name, builder)?;
        let subscription = Subscription {
            name: name.into(),
            producer: queue.producer(),
            queue: queue.clone(),
        };
        self.inner
            .subscriptions
            .write()
            .push(Arc::new(subscription));
        if self.is_closed() {
            queue.close(); // closed while we were opening
        }
        Ok(queue)
    }

    /// Where a subscription's queue is opened: a persistent topic puts it
    /// in `<path>/<name>` unless the builder already has a path. The queue
    /// is named after the subscription unless the builder names it.
    fn open_subscription(&self, name: &str, builder: Builder<T>) -> Result<Queue<T>, OpenError> {
        let builder = if builder.has_name() {
            builder
        } else {
            builder.name(name)
        };
        match &self.inner.path {
            Some(path) if !builder.has_path() => builder.path(path.join(name)).open(),
            _ => builder.open(),
        }
    }

    /// Removes a subscription from the fan-out and returns its queue, which
    /// keeps its messages and stays usable; the topic no longer holds it
    /// open. `None` if there is no such subscription.
    pub fn unsubscribe(&self, name: &str) -> Option<Queue<T>> {
        let _one_at_a_time = self.inner.subscribing.lock();
        let mut list = self.inner.subscriptions.write();
        let index = list.iter().position(|s| &*s.name == name)?;
        Some(list.remove(index).queue.clone())
    }

    /// The queue of the subscription named `name`.
    pub fn subscription(&self, name: &str) -> Option<Queue<T>> {
        self.find(name).map(|s| s.queue.clone())
    }

    /// The names of the subscriptions, in the order they were added.
    pub fn subscriptions(&self) -> Vec<String> {
        let list = self.inner.subscriptions.read();
        list.iter().map(|s| s.name.to_string()).collect()
    }

    fn find(&self, name: &str) -> Option<Arc<Subscription<T>>> {
        let list = self.inner.subscriptions.read();
        list.iter().find(|s| &*s.name == name).cloned()
    }

    /// Publishes `message` to every subscription, blocking while any of
    /// them is full, until each has accepted it.
    ///
    /// Subscriptions with room get the message at once; the publisher then
    /// waits on the full ones in subscription order. Fails with
    /// [`PublishError::Closed`] if the topic is closed, and with
    /// [`PublishError::Refused`] if some subscription refused it for good
    /// (its queue was closed); the others have it.
    pub fn publish(&self, message: T) -> Result<Published, PublishError<T>> {
        self.publish_with(message, SendOptions::new())
    }

    /// [`publish`](Self::publish) with an idempotency key and/or a delay,
    /// applied in every subscription.
    ///
    /// A key already seen by a subscription within its dedup window is a
    /// [`Sent::Duplicate`] there and enqueues nothing, so retrying a publish
    /// with the same key delivers only to the subscriptions that lacked it.
    /// (A subscription added after the first publish has not seen the key
    /// and does get the retry.) The same key with another payload is
    /// refused as [`Refusal::KeyConflict`].
    pub fn publish_with(
        &self,
        message: T,
        options: SendOptions,
    ) -> Result<Published, PublishError<T>> {
        self.fan_out(message, options, true)
    }

    /// Publishes without waiting. Subscriptions with room get the message
    /// now; if some were full, returns [`PublishError::Refused`] naming
    /// them (with [`Refusal::Full`]), listing where it was delivered, and
    /// giving the message back.
    ///
    /// Never all-or-nothing: the queue API has no way to take back a
    /// message another subscription already accepted. To complete a
    /// refused publish without duplicates, publish again with the same
    /// idempotency key (see [`try_publish_with`](Self::try_publish_with));
    /// without a key, send to the named subscriptions yourself
    /// ([`subscription`](Self::subscription)).
    pub fn try_publish(&self, message: T) -> Result<Published, PublishError<T>> {
        self.try_publish_with(message, SendOptions::new())
    }

    /// [`try_publish`](Self::try_publish) with an idempotency key and/or a
    /// delay.
    ///
    /// ```
    /// use spool::{Queue, Refusal, PublishError, SendOptions, Topic};
    ///
    /// let topic: Topic<String> = Topic::new();
    /// let fast = topic.subscribe("fast", Queue::builder())?;
    /// let slow = topic.subscribe("slow", Queue::builder().capacity(1))?;
    /// topic.publish("first".to_string())?; // fills `slow`
    ///
    /// let key = || SendOptions::new().key("upload-2");
    /// let err = topic.try_publish_with("second".into(), key()).unwrap_err();
    /// let PublishError::Refused { refused, published, .. } = err else { panic!() };
    /// assert_eq!(refused[0].subscription, "slow");
    /// assert_eq!(refused[0].reason, Refusal::Full);
    /// assert!(published.get("fast").is_some());
    ///
    /// slow.consumer().try_recv()?.ack()?; // room again
    /// let retry = topic.try_publish_with("second".into(), key())?;
    /// assert!(retry.get("fast").unwrap().is_duplicate()); // not twice
    /// assert!(!retry.get("slow").unwrap().is_duplicate());
    /// assert_eq!(fast.stats().ready, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_publish_with(
        &self,
        message: T,
        options: SendOptions,
    ) -> Result<Published, PublishError<T>> {
        self.fan_out(message, options, false)
    }

    fn fan_out(
        &self,
        message: T,
        options: SendOptions,
        wait: bool,
    ) -> Result<Published, PublishError<T>> {
        if self.is_closed() {
            return Err(PublishError::Closed(message));
        }
        let list: Vec<Arc<Subscription<T>>> = self.inner.subscriptions.read().clone();
        let mut round = Round::default();
        let mut full = Vec::new();
        let mut original = Some(message);
        for (index, subscription) in list.iter().enumerate() {
            let copy = if index + 1 == list.len() {
                original.take().expect("moved only into the last send")
            } else {
                original.as_ref().expect("kept until the last send").clone()
            };
            match subscription.producer.try_send_with(copy, options.clone()) {
                Err(SendError::Full(copy)) if wait => full.push((index, copy)),
                outcome => round.record(index, outcome),
            }
        }
        for (index, copy) in full {
            let outcome = list[index].producer.send_with(copy, options.clone());
            round.record(index, outcome);
        }
        round.finish(&list, original)
    }

    /// Closes the topic and every subscription queue: publishing and
    /// subscribing fail with `Closed`, blocked publishers wake with it, and
    /// consumers drain what their subscription holds, then get
    /// [`RecvError::Closed`](crate::RecvError::Closed).
    pub fn close(&self) {
        self.inner.closed.store(true, SeqCst);
        for subscription in self.inner.subscriptions.read().iter() {
            subscription.queue.close();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(SeqCst)
    }
}

impl<T: Message + Clone> Default for Topic<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Topic {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = self.inner.subscriptions.read();
        let names: Vec<&str> = list.iter().map(|s| &*s.name).collect();
        f.debug_struct("Topic")
            .field("subscriptions", &names)
            .field("closed", &self.inner.closed.load(SeqCst))
            .finish()
    }
}

/// The outcomes of one publish, gathered per subscription index.
struct Round<T> {
    sent: Vec<(usize, Sent)>,
    refused: Vec<(usize, Refusal)>,
    returned: Option<T>,
}

impl<T> Default for Round<T> {
    fn default() -> Self {
        Round {
            sent: Vec::new(),
            refused: Vec::new(),
            returned: None,
        }
    }
}

impl<T> Round<T> {
    fn record(&mut self, index: usize, outcome: Result<Sent, SendError<T>>) {
        match outcome {
            Ok(sent) => self.sent.push((index, sent)),
            Err(error) => {
                let reason = match &error {
                    SendError::KeyConflict { original, .. } => Refusal::KeyConflict {
                        original: *original,
                    },
                    SendError::Encode { reason, .. } => Refusal::Encode {
                        reason: reason.clone(),
                    },
                    SendError::Closed(_) => Refusal::Closed,
                    SendError::TooLarge { size, max, .. } => Refusal::TooLarge {
                        size: *size,
                        max: *max,
                    },
                    SendError::KeyTooLong { len, max, .. } => Refusal::KeyTooLong {
                        len: *len,
                        max: *max,
                    },
                    SendError::GroupTooLong { len, max, .. } => Refusal::GroupTooLong {
                        len: *len,
                        max: *max,
                    },
                    SendError::Storage { error, .. } => Refusal::Storage(error.clone()),
                    // Full, and Timeout which a topic never asks for.
                    _ => Refusal::Full,
                };
                self.refused.push((index, reason));
                self.returned.get_or_insert(error.into_inner());
            }
        }
    }

    fn finish(
        mut self,
        list: &[Arc<Subscription<T>>],
        original: Option<T>,
    ) -> Result<Published, PublishError<T>> {
        self.sent.sort_by_key(|(index, _)| *index);
        self.refused.sort_by_key(|(index, _)| *index);
        let published = Published {
            sent: (self.sent.into_iter())
                .map(|(index, sent)| (Arc::clone(&list[index].name), sent))
                .collect(),
        };
        if self.refused.is_empty() {
            return Ok(published);
        }
        let refused = (self.refused.into_iter())
            .map(|(index, reason)| Refused {
                subscription: list[index].name.to_string(),
                reason,
            })
            .collect();
        let message = self
            .returned
            .or(original)
            .expect("a refusal gives its copy back");
        Err(PublishError::Refused {
            message,
            published,
            refused,
        })
    }
}

/// Where a published message went: one [`Sent`] per subscription that has
/// it, in subscription order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    sent: Vec<(Arc<str>, Sent)>,
}

impl Published {
    /// How many subscriptions have the message (newly or as a duplicate).
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether no subscription has it (the topic had none).
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// What the subscription named `name` did with it.
    pub fn get(&self, name: &str) -> Option<Sent> {
        self.iter().find(|(n, _)| *n == name).map(|(_, sent)| sent)
    }

    /// Each subscription that has the message, with what it did.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Sent)> + '_ {
        self.sent.iter().map(|(name, sent)| (&**name, *sent))
    }

    /// Whether every subscription reported a duplicate key (and there was
    /// at least one): the publish changed nothing.
    pub fn is_duplicate(&self) -> bool {
        !self.sent.is_empty() && self.sent.iter().all(|(_, sent)| sent.is_duplicate())
    }
}

/// Why a publish did not reach every subscription.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError<T> {
    /// The topic is closed: no subscription got the message.
    Closed(T),
    /// Some subscriptions did not take the message; the ones in
    /// `published` did.
    Refused {
        /// The message, given back.
        message: T,
        /// The subscriptions that have it.
        published: Published,
        /// The ones that do not, and why, in subscription order.
        refused: Vec<Refused>,
    },
}

impl<T> PublishError<T> {
    /// The message that was not (fully) published.
    pub fn into_inner(self) -> T {
        match self {
            PublishError::Closed(message) | PublishError::Refused { message, .. } => message,
        }
    }
}

impl<T> fmt::Debug for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Closed(_) => f.write_str("Closed(..)"),
            PublishError::Refused {
                published, refused, ..
            } => f
                .debug_struct("Refused")
                .field("published", published)
                .field("refused", refused)
                .finish_non_exhaustive(),
        }
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Closed(_) => f.write_str("topic is closed"),
            PublishError::Refused { refused, .. } => {
                f.write_str("not published to")?;
                for (i, r) in refused.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{} ({})", r.subscription, r.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl<T> std::error::Error for PublishError<T> {}

/// One subscription that did not take a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its name.
    pub subscription: String,
    /// Why.
    pub reason: Refusal,
}

/// Why a subscription did not take a published message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// It was full ([`Topic::try_publish`] only; `publish` waits).
    #[error("full")]
    Full,
    /// Its queue was closed.
    #[error("closed")]
    Closed,
    /// It saw the idempotency key with a different payload.
    #[error("key already used for message {original} with another payload")]
    KeyConflict {
        /// The message first sent with the key there.
        original: MessageId,
    },
    /// The payload could not be encoded (a keyed publish compares payloads).
    #[error("payload could not be encoded: {reason}")]
    Encode {
        /// What the codec said.
        reason: String,
    },
    /// The encoded message is larger than the subscription's
    /// `max_message_bytes` (a persistent subscription).
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The idempotency key is longer than [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES).
    #[error("idempotency key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message group key is longer than
    /// [`MAX_GROUP_BYTES`](crate::MAX_GROUP_BYTES).
    #[error("message group key of {len} bytes exceeds the maximum of {max}")]
    GroupTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The subscription's write-ahead file failed.
    #[error("storage failed: {0}")]
    Storage(crate::StorageError),
}

/// Why a subscription was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The name is not a safe directory name (see the
    /// [naming rule](Topic#subscription-names): lowercase letters, digits, `-`, `_`, at most 64 bytes).
    #[error("invalid subscription name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A subscription with this name exists.
    #[error("subscription {0:?} already exists")]
    Duplicate(String),
    /// The topic is closed.
    #[error("topic is closed")]
    Closed,
    /// The subscription's queue settings are invalid.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// Checks the subscription name rule of the module docs.
fn validate_name(name: &str) -> Result<(), &'static str> {
    const RESERVED: [&str; 4] = ["con", "prn", "aux", "nul"];
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err("empty");
    };
    if bytes.len() > MAX_SUBSCRIPTION_NAME {
        return Err("longer than 64 bytes");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit");
    }
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_';
    if !bytes.iter().all(allowed) {
        return Err("only lowercase ASCII letters, digits, '-' and '_' are allowed");
    }
    let device = RESERVED.contains(&name)
        || (bytes.len() == 4
            && (name.starts_with("com") || name.starts_with("lpt"))
            && (b'1'..=b'9').contains(&bytes[3]));
    if device {
        return Err("reserved device name on Windows");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn safe_directory_names_only() {
        for good in [
            "thumbnail",
            "a",
            "9lives",
            "search-index_v2",
            &"x".repeat(64),
            "com0",
            "console",
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "", ".", "..", ".hidden", "-x", "_x", "Thumb", "a/b", "a\\b", "a b", "é", "con", "nul",
            "com1", "lpt9", &long,
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
