//! Model-based test of priorities and message groups (a split of
//! `tests/model.rs`, which covers everything else).
//!
//! A plain reference model runs beside a real [`Queue`] on a
//! [`ManualClock`]: messages in a `BTreeMap` by id with their state, a
//! `VecDeque` for the plain ready lane, one per priority level for the
//! messages a receive may take, and each group's live members with its
//! current message. proptest generates sends (plain, with a priority,
//! with a group, delayed), receives and batch receives, every way of
//! settling (ack, nack, retry after, dead-letter, drop), lease expiry
//! (clock jumps), redrive, cancel, pause and resume, and shrinks any
//! disagreement to a minimal sequence.
//!
//! The model's rules, as `src/order.rs` states them:
//!
//! - A receive takes from the highest level with a message to take; the
//!   normal level merges the plain lane with the ordered normal messages
//!   by id. While a lower level waits, the `FAIR_SHARE`th receive in a row
//!   takes, from the levels below the highest, the waiting message with
//!   the lowest id.
//! - A group's members are its live messages (ready, delayed, in flight,
//!   retrying); its current message is the one out of it. A group with no
//!   current message offers its lowest id once it is ready; the current
//!   one is offered again whenever it comes back ready. A member leaves on
//!   ack, dead-lettering and cancel; then the next is offered.
//! - What comes due in one tick (delays, expired leases: backoff is none)
//!   is made ready in order of (instant, id); a lease that runs out on the
//!   last allowed receive is dead-lettered at once, before those.
//!
//! After every step the test compares what the queue returned (the
//! message received, its receive count, batch contents, settle, redrive
//! and cancel outcomes) and the ready / in-flight / delayed / dead-letter
//! counts. The model also checks, on its own, that a group never has two
//! messages in flight and that nothing is lost (every id sent is live or
//! acknowledged or cancelled).

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use spool::{
    Backoff, Batch, Delivery, ManualClock, MessageId, Priority, Queue, RecvError, SendOptions,
    SettleError, FAIR_SHARE,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

const LEASE_MS: u64 = 100;
const MAX_RECEIVES: u32 = 3;
const LEVELS: usize = 3;
const NORMAL: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Ack,
    Nack,
    RetryAfter(u64),
    DeadLetter,
    Drop,
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        level: usize,
        group: Option<u8>,
        delay: u64,
    },
    Recv,
    RecvBatch(usize),
    Settle(usize, How),
    SettleBatch(usize, bool),
    Advance(u64),
    Redrive,
    Cancel(usize),
    Pause(bool),
}

// ----- the reference model -----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Ready,
    Delayed(u64),
    InFlight { deadline: u64, lease: u64 },
    Dead,
}

#[derive(Debug, Clone)]
struct Msg {
    level: usize,
    group: Option<u8>,
    state: St,
    receive_count: u32,
    /// In a level's list (a receive may take it).
    offered: bool,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeSet<u64>,
    current: Option<u64>,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    next_id: u64,
    msgs: BTreeMap<u64, Msg>,
    plain: VecDeque<u64>,
    levels: [VecDeque<u64>; LEVELS],
    groups: BTreeMap<u8, Group>,
    passed_over: u32,
    paused: bool,
    leases: u64,
    /// Ids acknowledged or cancelled (gone for good).
    gone: BTreeSet<u64>,
}

impl Model {
    fn send(&mut self, level: usize, group: Option<u8>, delay: u64) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.msgs.insert(
            id,
            Msg {
                level,
                group,
                state: St::Ready,
                receive_count: 0,
                offered: false,
            },
        );
        if let Some(g) = group {
            self.groups.entry(g).or_default().members.insert(id);
        }
        if delay == 0 {
            self.make_ready(id);
        } else {
            self.msgs.get_mut(&id).unwrap().state = St::Delayed(self.now + delay);
        }
        id
    }

    fn make_ready(&mut self, id: u64) {
        let m = self.msgs.get_mut(&id).unwrap();
        m.state = St::Ready;
        match (m.level, m.group) {
            (NORMAL, None) => self.plain.push_back(id),
            (level, None) => {
                m.offered = true;
                self.levels[level].push_back(id);
            }
            (_, Some(g)) => self.offer(g),
        }
    }

    fn offer(&mut self, g: u8) {
        let Some(group) = self.groups.get_mut(&g) else {
            return;
        };
        let Some(head) = group.current.or_else(|| group.members.first().copied()) else {
            return;
        };
        let m = self.msgs.get_mut(&head).unwrap();
        if m.state == St::Ready && !m.offered {
            group.current = Some(head);
            m.offered = true;
            self.levels[m.level].push_back(head);
        }
    }

    /// `id` leaves its group, if it has one.
    fn leave(&mut self, id: u64) {
        let Some(g) = self.msgs.get(&id).and_then(|m| m.group) else {
            return;
        };
        let group = self.groups.get_mut(&g).unwrap();
        group.members.remove(&id);
        if group.current == Some(id) {
            group.current = None;
        }
        if group.members.is_empty() {
            self.groups.remove(&g);
        } else {
            self.offer(g);
        }
    }

    fn bury(&mut self, id: u64) {
        self.msgs.get_mut(&id).unwrap().state = St::Dead;
        self.leave(id);
    }

    fn tick(&mut self) {
        let now = self.now;
        let mut visible: Vec<(u64, u64)> = Vec::new();
        let mut expired: Vec<(u64, u64)> = Vec::new();
        for (&id, m) in &self.msgs {
            match m.state {
                St::Delayed(due) if due <= now => visible.push((due, id)),
                St::InFlight { deadline, .. } if deadline <= now => expired.push((deadline, id)),
                _ => {}
            }
        }
        expired.sort();
        for (deadline, id) in expired {
            if self.msgs[&id].receive_count >= MAX_RECEIVES {
                self.bury(id);
            } else {
                self.msgs.get_mut(&id).unwrap().state = St::Delayed(deadline);
                visible.push((deadline, id));
            }
        }
        visible.sort();
        for (_, id) in visible {
            self.make_ready(id);
        }
    }

    fn take(&mut self) -> Option<u64> {
        let head = |q: &VecDeque<u64>| q.front().copied();
        let mut heads = [
            head(&self.levels[0]),
            head(&self.levels[1]),
            head(&self.levels[2]),
        ];
        let plain = head(&self.plain);
        let from_plain = match (plain, heads[NORMAL]) {
            (Some(p), Some(h)) => p < h,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_plain {
            heads[NORMAL] = plain;
        }
        let top = heads.iter().position(Option::is_some)?;
        let lower = (top + 1..LEVELS)
            .filter_map(|l| heads[l].map(|id| (id, l)))
            .min();
        let level = match lower {
            Some((_, l)) if self.passed_over + 1 >= FAIR_SHARE => {
                self.passed_over = 0;
                l
            }
            Some(_) => {
                self.passed_over += 1;
                top
            }
            None => {
                self.passed_over = 0;
                top
            }
        };
        let id = if level == NORMAL && from_plain {
            self.plain.pop_front()
        } else {
            self.levels[level].pop_front()
        }?;
        self.msgs.get_mut(&id).unwrap().offered = false;
        Some(id)
    }

    /// Takes up to `max` under one new lease; (id, receive count) each.
    fn recv(&mut self, max: usize) -> Option<(Vec<(u64, u32)>, u64)> {
        self.tick();
        if self.paused {
            return None;
        }
        self.leases += 1;
        let lease = self.leases;
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(id) = self.take() else { break };
            let m = self.msgs.get_mut(&id).unwrap();
            m.receive_count += 1;
            m.state = St::InFlight {
                deadline: self.now + LEASE_MS,
                lease,
            };
            taken.push((id, m.receive_count));
        }
        self.check();
        (!taken.is_empty()).then_some((taken, lease))
    }

    fn current(&self, id: u64, lease: u64) -> bool {
        matches!(self.msgs.get(&id).map(|m| m.state), Some(St::InFlight { lease: l, .. }) if l == lease)
    }

    /// Settles `ids` (one lease); whether the lease was current.
    fn settle(&mut self, ids: &[u64], lease: u64, how: How) -> bool {
        self.tick();
        if !self.current(ids[0], lease) {
            return false;
        }
        for &id in ids {
            match how {
                How::Ack => {
                    self.leave(id);
                    self.msgs.remove(&id);
                    self.gone.insert(id);
                }
                How::DeadLetter => self.bury(id),
                How::Nack | How::Drop | How::RetryAfter(_) => {
                    if self.msgs[&id].receive_count >= MAX_RECEIVES {
                        self.bury(id);
                    } else if let How::RetryAfter(d) = how {
                        self.msgs.get_mut(&id).unwrap().state = St::Delayed(self.now + d);
                    } else {
                        self.make_ready(id);
                    }
                }
            }
        }
        self.check();
        true
    }

    fn redrive(&mut self) -> Option<u64> {
        self.tick();
        let id = self
            .msgs
            .iter()
            .find(|(_, m)| m.state == St::Dead)
            .map(|(&id, _)| id)?;
        let m = self.msgs.get_mut(&id).unwrap();
        m.receive_count = 0;
        if let Some(g) = m.group {
            self.groups.entry(g).or_default().members.insert(id);
        }
        self.make_ready(id);
        Some(id)
    }

    /// Cancels the `k`th live message (by id) if it is ready or delayed.
    fn cancel(&mut self, k: usize) -> Option<(u64, bool)> {
        self.tick();
        let live: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| m.state != St::Dead)
            .map(|(&id, _)| id)
            .collect();
        let id = *live.get(k % live.len().max(1))?;
        let cancelled = matches!(self.msgs[&id].state, St::Ready | St::Delayed(_));
        if cancelled {
            self.plain.retain(|&x| x != id);
            for level in &mut self.levels {
                level.retain(|&x| x != id);
            }
            self.leave(id);
            self.msgs.remove(&id);
            self.gone.insert(id);
        }
        Some((id, cancelled))
    }

    fn counts(&mut self) -> (usize, usize, usize, usize) {
        self.tick();
        let mut c = (0, 0, 0, 0);
        for m in self.msgs.values() {
            match m.state {
                St::Ready => c.0 += 1,
                St::InFlight { .. } => c.1 += 1,
                St::Delayed(_) => c.2 += 1,
                St::Dead => c.3 += 1,
            }
        }
        c
    }

    /// A group never has two messages in flight, and nothing is lost.
    fn check(&self) {
        let mut out: BTreeMap<u8, usize> = BTreeMap::new();
        for m in self.msgs.values() {
            if let (Some(g), St::InFlight { .. }) = (m.group, m.state) {
                *out.entry(g).or_default() += 1;
            }
        }
        assert!(out.values().all(|&n| n <= 1), "two in flight: {out:?}");
        for id in 1..=self.next_id {
            assert!(
                self.msgs.contains_key(&id) || self.gone.contains(&id),
                "lost {id}"
            );
        }
    }
}

// ----- the harness ---------------------------------------------------------------

struct Harness {
    clock: ManualClock,
    queue: Queue<u32>,
    model: Model,
    held: Vec<(Delivery<u32>, u64)>,
    batches: Vec<(Batch<u32>, Vec<u64>, u64)>,
    /// The queue's name for each id sent.
    ids: BTreeMap<u64, MessageId>,
}

fn priority(level: usize) -> Priority {
    Priority::from_level(level as u8).unwrap()
}

impl Harness {
    fn new() -> Self {
        let clock = ManualClock::new();
        let queue = Queue::builder()
            .clock(clock.clone())
            .backoff(Backoff::None)
            .capacity(1000)
            .visibility_timeout(Duration::from_millis(LEASE_MS))
            .max_receives(MAX_RECEIVES)
            .open()
            .unwrap();
        Harness {
            clock,
            queue,
            model: Model::default(),
            held: Vec::new(),
            batches: Vec::new(),
            ids: BTreeMap::new(),
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Send {
                level,
                group,
                delay,
            } => {
                let mut options = SendOptions::new()
                    .priority(priority(*level))
                    .delay(Duration::from_millis(*delay));
                if let Some(g) = group {
                    options = options.group(format!("g{g}"));
                }
                let want = self.model.send(*level, *group, *delay);
                let sent = self.queue.producer().send_with(want as u32, options);
                let id = sent.unwrap().id();
                assert_eq!(id.get(), want, "{op:?}");
                self.ids.insert(want, id);
            }
            Op::Recv => {
                let got = self.queue.consumer().try_recv();
                match self.model.recv(1) {
                    Some((taken, lease)) => {
                        let delivery = got.expect("the model received");
                        assert_eq!((*delivery as u64, delivery.receive_count()), taken[0]);
                        self.held.push((delivery, lease));
                    }
                    None => assert_eq!(got.unwrap_err(), RecvError::Empty),
                }
            }
            Op::RecvBatch(max) => {
                let got = self.queue.consumer().recv_batch(*max, Duration::ZERO);
                match self.model.recv(*max) {
                    Some((taken, lease)) => {
                        let batch = got.expect("the model received a batch");
                        let seen: Vec<(u64, u32)> = batch
                            .messages()
                            .map(|m| (*m.payload() as u64, m.receive_count()))
                            .collect();
                        assert_eq!(seen, taken);
                        let ids = taken.iter().map(|(id, _)| *id).collect();
                        self.batches.push((batch, ids, lease));
                    }
                    None => assert_eq!(got.unwrap_err(), RecvError::Timeout),
                }
            }
            Op::Settle(which, how) => {
                if self.held.is_empty() {
                    return;
                }
                let (delivery, lease) = self.held.remove(which % self.held.len());
                let id = *delivery as u64;
                let result = match how {
                    How::Ack => delivery.ack(),
                    How::Nack => delivery.nack(),
                    How::RetryAfter(d) => delivery.retry_after(Duration::from_millis(*d)),
                    How::DeadLetter => delivery.dead_letter("bad"),
                    How::Drop => {
                        drop(delivery);
                        Ok(())
                    }
                };
                let current = self.model.settle(&[id], lease, *how);
                match (how, current) {
                    (How::Drop, _) => {}
                    (_, true) => result.unwrap(),
                    (_, false) => assert!(matches!(result, Err(SettleError::LeaseExpired { .. }))),
                }
            }
            Op::SettleBatch(which, ack) => {
                if self.batches.is_empty() {
                    return;
                }
                let (batch, ids, lease) = self.batches.remove(which % self.batches.len());
                let result = if *ack { batch.ack() } else { batch.nack() };
                let how = if *ack { How::Ack } else { How::Nack };
                match self.model.settle(&ids, lease, how) {
                    true => result.unwrap(),
                    false => assert!(matches!(result, Err(SettleError::LeaseExpired { .. }))),
                }
            }
            Op::Advance(ms) => {
                self.clock.advance(Duration::from_millis(*ms));
                self.model.now += ms;
            }
            Op::Redrive => {
                let dead = self.queue.dead_letters();
                let first = dead.list().iter().map(|d| d.id()).min();
                let want = self.model.redrive();
                assert_eq!(first.map(MessageId::get), want);
                if let Some(id) = first {
                    dead.redrive(id).unwrap();
                }
            }
            Op::Cancel(k) => {
                if let Some((id, cancelled)) = self.model.cancel(*k) {
                    let result = self.queue.cancel(self.ids[&id]);
                    assert_eq!(result.is_ok(), cancelled, "cancel {id}");
                }
            }
            Op::Pause(paused) => {
                self.model.paused = *paused;
                if *paused {
                    self.queue.pause().unwrap();
                } else {
                    self.queue.resume().unwrap();
                }
            }
        }
        let stats = self.queue.stats();
        let counts = self.model.counts();
        assert_eq!(
            (
                stats.ready,
                stats.in_flight,
                stats.delayed,
                stats.dead_letters
            ),
            counts,
            "after {op:?}"
        );
    }
}

fn run(ops: &[Op]) {
    let mut harness = Harness::new();
    for op in ops {
        harness.step(op);
    }
}

// ----- strategies ----------------------------------------------------------------

fn op_strategy() -> impl Strategy<Value = Op> {
    let how = prop_oneof![
        4 => Just(How::Ack),
        2 => Just(How::Nack),
        1 => (10u64..=60).prop_map(How::RetryAfter),
        1 => Just(How::DeadLetter),
        1 => Just(How::Drop),
    ];
    prop_oneof![
        8 => (0usize..LEVELS, prop::option::weighted(0.6, 0u8..4), prop_oneof![4 => Just(0u64), 1 => Just(50u64)])
            .prop_map(|(level, group, delay)| Op::Send { level, group, delay }),
        6 => Just(Op::Recv),
        2 => (1usize..=5).prop_map(Op::RecvBatch),
        6 => (any::<usize>(), how).prop_map(|(i, how)| Op::Settle(i, how)),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, ack)| Op::SettleBatch(i, ack)),
        2 => prop_oneof![Just(10u64), Just(60), Just(LEASE_MS + 1)].prop_map(Op::Advance),
        1 => Just(Op::Redrive),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<bool>().prop_map(Op::Pause),
    ]
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 500;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ordered_queue_matches_the_model(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        run(&ops);
    }
}

// ----- fixed scenarios -------------------------------------------------------------

fn send(level: usize, group: Option<u8>) -> Op {
    Op::Send {
        level,
        group,
        delay: 0,
    }
}

#[test]
fn a_group_held_by_an_expired_lease_across_several_receives() {
    run(&[
        send(1, Some(0)),
        send(1, Some(0)),
        send(0, Some(1)),
        Op::Recv,
        Op::Recv,
        Op::Recv,
        Op::Advance(LEASE_MS + 1),
        Op::Recv,
        Op::Settle(0, How::Nack),
        Op::Recv,
        Op::Advance(LEASE_MS + 1),
        Op::Recv,
        Op::Recv,
        Op::Redrive,
        Op::Recv,
        Op::Settle(0, How::Ack),
        Op::Recv,
    ]);
}

#[test]
fn batches_across_levels_and_groups_with_a_pause() {
    run(&[
        send(2, None),
        send(1, Some(2)),
        send(1, Some(2)),
        send(0, None),
        send(1, None),
        Op::Pause(true),
        Op::RecvBatch(5),
        Op::Pause(false),
        Op::RecvBatch(5),
        Op::SettleBatch(0, false),
        Op::RecvBatch(5),
        Op::SettleBatch(0, true),
        Op::RecvBatch(5),
        Op::Cancel(0),
    ]);
}
