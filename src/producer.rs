//! The sending side.

use crate::backend::Backend;
use crate::error::SendError;
use crate::message::MessageId;
use crate::order::Priority;
use crate::shared::Wait;
use crate::Message;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// The longest error text or dead-letter reason kept, in bytes; longer ones
/// are cut (at a character boundary).
pub const MAX_TEXT_BYTES: usize = 4096;

/// Cuts `text` to [`MAX_TEXT_BYTES`].
pub(crate) fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Options for one send: an idempotency key, a delay or a time to become
/// visible at, and per-message limits (`max_receives`, a time to live).
///
/// ```
/// use spool::SendOptions;
/// use std::time::{Duration, SystemTime};
///
/// let options = SendOptions::new().key("video-42").delay(Duration::from_secs(5));
/// let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
/// let reminder = SendOptions::new().at(tomorrow);
/// # let _ = (options, reminder);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub(crate) key: Option<Arc<str>>,
    pub(crate) delay: Duration,
    /// Visible at this wall-clock time (on the queue's clock), instead of
    /// after `delay`.
    pub(crate) at: Option<SystemTime>,
    /// Its own `max_receives`, instead of the queue's.
    pub(crate) max_receives: Option<u32>,
    /// Dead-lettered as `Expired` if not received within this.
    pub(crate) ttl: Option<Duration>,
    /// The key alone decides a duplicate, whatever the payload (a
    /// schedule's ticks).
    pub(crate) any_payload: bool,
    /// Its priority and message group, if either was set: behind one
    /// pointer, so that a send without them moves and tests one word.
    pub(crate) order: Option<Box<OrderOptions>>,
}

/// A send's priority and message group.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderOptions {
    pub(crate) priority: Priority,
    pub(crate) group: Option<Arc<str>>,
}

impl SendOptions {
    /// Its priority and group, if it has either (a `Normal` priority and
    /// no group count as neither).
    #[inline(always)]
    pub(crate) fn ordering(&self) -> Option<&OrderOptions> {
        self.order
            .as_deref()
            .filter(|order| order.priority != Priority::Normal || order.group.is_some())
    }
}

impl SendOptions {
    /// No key, no delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// An idempotency key: another send with the same key within the
    /// queue's dedup window enqueues nothing and returns
    /// [`Sent::Duplicate`] with the first message's id (even after that
    /// message was acknowledged). The same key with a different payload is
    /// refused with [`SendError::KeyConflict`], unless the queue compares
    /// keys only ([`Builder::dedup_key_only`](crate::Builder::dedup_key_only)).
    /// At most [`MAX_KEY_BYTES`].
    pub fn key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Keeps the message invisible for `delay` after it is sent. Replaces
    /// an earlier [`at`](Self::at).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self.at = None;
        self
    }

    /// Keeps the message invisible until the wall-clock time `at`, as the
    /// queue's [`Clock`](crate::Clock) reads it; a time already past makes
    /// it visible at once. Replaces an earlier [`delay`](Self::delay).
    ///
    /// A persistent queue keeps the time itself (as it does the end of a
    /// delay), so after a restart, however long, the message becomes
    /// visible at `at`, or at once if that has passed meanwhile. Times
    /// after the year 2554 saturate there (see [`Clock`](crate::Clock)).
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self.delay = Duration::ZERO;
        self
    }

    /// How many deliveries this message gets before it is dead-lettered,
    /// instead of the queue's [`max_receives`](crate::Builder::max_receives)
    /// (at least 1: 0 is taken as 1). Kept with the message, across
    /// redrives and restarts.
    pub fn max_receives(mut self, max: u32) -> Self {
        self.max_receives = Some(max.max(1));
        self
    }

    /// A time to live, from the send: if no consumer has received the
    /// message by then, it is dead-lettered with
    /// [`DeadLetterReason::Expired`](crate::DeadLetterReason::Expired), as
    /// of that instant (a delayed message included, even one whose delay
    /// ends later). Once received, a message is out of reach of its time
    /// to live: its retries follow `max_receives`. A redrive gives it a new
    /// life without one. A persistent queue keeps the expiry time, so a
    /// message that expired while the process was down is dead-lettered on
    /// reopen.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Its priority: a receive takes the highest level first, and lets at
    /// least one in every [`FAIR_SHARE`](crate::FAIR_SHARE) receives take
    /// from the lower levels while they wait (see [`Priority`]). Kept
    /// with the message across retries, redrives and restarts.
    ///
    /// ```
    /// use spool::{Priority, Queue, SendOptions};
    ///
    /// let queue = Queue::<String>::builder().open()?;
    /// let (producer, consumer) = (queue.producer(), queue.consumer());
    /// producer.send("report".to_string())?;
    /// producer.send_with("page the on-call".to_string(), SendOptions::new().priority(Priority::High))?;
    /// assert_eq!(*consumer.try_recv()?, "page the on-call");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn priority(mut self, priority: Priority) -> Self {
        self.order.get_or_insert_with(Box::default).priority = priority;
        self
    }

    /// Its message group (SQS FIFO's message group id, Kafka's key): the
    /// messages of one group are delivered one at a time, in send order,
    /// across retries and lease expiries; a failing message holds its
    /// group (and only its group) until it is acknowledged or
    /// dead-lettered. Different groups are worked in parallel. At most
    /// [`MAX_GROUP_BYTES`](crate::MAX_GROUP_BYTES), else the send is
    /// refused with [`SendError::GroupTooLong`]. See the README's
    /// "Ordering" section for what dead-lettering, redrive, cancel and
    /// times to live do to a group.
    ///
    /// ```
    /// use spool::{Queue, SendOptions};
    ///
    /// let queue = Queue::<u32>::builder().open()?;
    /// let (producer, consumer) = (queue.producer(), queue.consumer());
    /// producer.send_with(1, SendOptions::new().group("customer-7"))?;
    /// producer.send_with(2, SendOptions::new().group("customer-7"))?;
    /// producer.send_with(10, SendOptions::new().group("customer-8"))?;
    /// let first = consumer.try_recv()?;
    /// assert_eq!(*first, 1);
    /// // 2 waits for 1; customer 8 does not.
    /// assert_eq!(*consumer.try_recv()?, 10);
    /// assert!(consumer.try_recv().is_err());
    /// first.ack()?;
    /// assert_eq!(*consumer.try_recv()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.order.get_or_insert_with(Box::default).group = Some(group.into());
        self
    }

    /// Under the key, any payload is the same message: a duplicate, never
    /// a conflict.
    pub(crate) fn any_payload(mut self) -> Self {
        self.any_payload = true;
        self
    }
}

/// What a send with options did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The message was enqueued under this id.
    Enqueued(MessageId),
    /// Its key was seen within the dedup window: nothing was enqueued, and
    /// this is the id of the message first sent with the key.
    Duplicate(MessageId),
}

impl Sent {
    /// The id of the message, new or original.
    pub fn id(self) -> MessageId {
        match self {
            Sent::Enqueued(id) | Sent::Duplicate(id) => id,
        }
    }

    /// Whether nothing was enqueued because of the key.
    pub fn is_duplicate(self) -> bool {
        matches!(self, Sent::Duplicate(_))
    }
}

/// Sends messages into a queue. Cheap to clone; use from any thread.
///
/// The queue counts as closed once [`Queue::close`](crate::Queue::close) is
/// called or every `Queue` and `Producer` handle is dropped.
pub struct Producer<T> {
    backend: Backend<T>,
}

impl<T: Message> Producer<T> {
    pub(crate) fn new(backend: Backend<T>) -> Self {
        backend.add_sender();
        Producer { backend }
    }

    fn send_waiting(
        &self,
        message: T,
        options: SendOptions,
        wait: Wait,
    ) -> Result<Sent, SendError<T>> {
        match &self.backend {
            Backend::Local(shared) => shared.send(message, options, wait),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.send(message, options, wait),
        }
    }

    fn send_batch_waiting(
        &self,
        messages: Vec<T>,
        wait: Wait,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        match &self.backend {
            Backend::Local(shared) => shared.send_batch(messages, wait),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.send_batch(messages, wait),
        }
    }
    /// Sends a message, blocking while the queue is full.
    ///
    /// In memory, fails only with [`SendError::Closed`]; a persistent queue
    /// can also refuse with `TooLarge` (above `max_message_bytes`), `Encode`
    /// or `Storage` (its write-ahead file failed). Every variant gives the
    /// message back. Blocked senders are not served
    /// first come, first served: when a slot frees, whichever sender takes
    /// it first wins, so under sustained pressure one sender can wait much
    /// longer than another.
    pub fn send(&self, message: T) -> Result<MessageId, SendError<T>> {
        self.send_waiting(message, SendOptions::default(), Wait::Forever)
            .map(Sent::id)
    }

    /// Sends a message if there is room now; [`SendError::Full`] gives it
    /// back if not.
    pub fn try_send(&self, message: T) -> Result<MessageId, SendError<T>> {
        self.send_waiting(message, SendOptions::default(), Wait::No)
            .map(Sent::id)
    }

    /// Sends a message, waiting at most `timeout` for room;
    /// [`SendError::Timeout`] gives it back if none came.
    pub fn send_timeout(&self, message: T, timeout: Duration) -> Result<MessageId, SendError<T>> {
        self.send_waiting(message, SendOptions::default(), Wait::timeout(timeout))
            .map(Sent::id)
    }

    /// Sends a message with an idempotency key and/or a delay, blocking
    /// while the queue is full.
    ///
    /// ```
    /// use spool::{Queue, SendOptions, Sent};
    ///
    /// let queue: Queue<String> = Queue::builder().open()?;
    /// let producer = queue.producer();
    /// let job = || "transcode 42".to_string();
    /// let first = producer.send_with(job(), SendOptions::new().key("upload-42"))?;
    /// let again = producer.send_with(job(), SendOptions::new().key("upload-42"))?;
    /// assert_eq!(again, Sent::Duplicate(first.id()));
    /// assert_eq!(queue.stats().ready, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_with(&self, message: T, options: SendOptions) -> Result<Sent, SendError<T>> {
        self.send_waiting(message, options, Wait::Forever)
    }

    /// Like [`send_with`](Self::send_with), but returns
    /// [`SendError::Full`] instead of waiting for room.
    pub fn try_send_with(&self, message: T, options: SendOptions) -> Result<Sent, SendError<T>> {
        self.send_waiting(message, options, Wait::No)
    }

    /// Sends several messages at once, in order, blocking until there is
    /// room for all of them. Returns their ids.
    ///
    /// A batch larger than the queue's capacity could never fit and is
    /// refused at once with [`SendError::Full`].
    pub fn send_batch(&self, messages: Vec<T>) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        self.send_batch_waiting(messages, Wait::Forever)
    }

    /// Sends several messages at once if there is room for all of them now;
    /// [`SendError::Full`] gives them all back if not (as it does at once
    /// for a batch larger than the capacity).
    pub fn try_send_batch(&self, messages: Vec<T>) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        self.send_batch_waiting(messages, Wait::No)
    }

    /// Sends several messages at once, waiting at most `timeout` for room
    /// for all of them; [`SendError::Timeout`] gives them all back if none
    /// came. A batch larger than the capacity could never fit: it is
    /// refused at once with [`SendError::Full`].
    pub fn send_batch_timeout(
        &self,
        messages: Vec<T>,
        timeout: Duration,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        self.send_batch_waiting(messages, Wait::timeout(timeout))
    }

    /// [`send`](Self::send) for async code: waits for room, and under
    /// [`Durability::Sync`](crate::Durability::Sync) for the disk, without
    /// blocking the thread, on any executor.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let queue: spool::Queue<u32> = spool::Queue::builder().capacity(1).open()?;
    /// let producer = queue.producer();
    /// producer.send_async(7).await?;
    /// let delivery = queue.consumer().recv_async().await?;
    /// assert_eq!(*delivery, 7);
    /// delivery.ack_async().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Cancel safety: a future dropped while it waits for room has sent
    /// nothing, and its message is dropped with it. Once there is room the
    /// message is enqueued in the same poll, without a wait in between;
    /// a future dropped after that, while it waits for the disk, has sent
    /// its message, which becomes visible at once (only the wait for the
    /// disk is given up). To know which happened after a drop, send with
    /// an idempotency key ([`send_with_async`](Self::send_with_async)) and
    /// send again: [`Sent::Duplicate`] says the first one went through.
    /// A timeout is a matter for the runtime (`tokio::time::timeout`):
    /// that drops the future.
    pub async fn send_async(&self, message: T) -> Result<MessageId, SendError<T>> {
        (self.send_with_async(message, SendOptions::default()).await).map(Sent::id)
    }

    /// [`send_with`](Self::send_with) for async code. Cancel safety as
    /// [`send_async`](Self::send_async).
    pub async fn send_with_async(
        &self,
        message: T,
        options: SendOptions,
    ) -> Result<Sent, SendError<T>> {
        match &self.backend {
            Backend::Local(shared) => shared.send_async(message, options).await,
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => {
                let remote = Arc::clone(remote);
                crate::redis::offload(move || remote.send(message, options, Wait::Forever)).await
            }
        }
    }

    /// [`send_batch`](Self::send_batch) for async code: waits until there
    /// is room for all of the messages. Cancel safety as
    /// [`send_async`](Self::send_async), for all of them at once.
    pub async fn send_batch_async(
        &self,
        messages: Vec<T>,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        match &self.backend {
            Backend::Local(shared) => shared.send_batch_async(messages).await,
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => {
                let remote = Arc::clone(remote);
                crate::redis::offload(move || remote.send_batch(messages, Wait::Forever)).await
            }
        }
    }

    /// Whether the queue is closed to new messages.
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Local(shared) => shared.is_closed(),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.is_closed(),
        }
    }

    /// The queue's clock (for a schedule).
    pub(crate) fn clock(&self) -> &Arc<dyn crate::Clock> {
        match &self.backend {
            Backend::Local(shared) => shared.clock(),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.clock(),
        }
    }

    /// The queue's clock, read now.
    pub(crate) fn now(&self) -> crate::clock::Nanos {
        self.clock().now_nanos()
    }
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        self.backend.add_sender();
        Producer {
            backend: self.backend.clone(),
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.backend.drop_sender();
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}
