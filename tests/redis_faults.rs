//! A Redis queue when the server fails: unreachable at open and mid-run,
//! killed and restarted under `appendfsync always`, and full
//! (`maxmemory`). Typed errors within a bounded time, never a panic or a
//! hang, and nothing acknowledged lost.
#![cfg(feature = "redis")]

mod common;

use common::redis_server::RedisServer;
use common::{in_thread, WAIT};
use spool::{OpenError, Queue, RecvError, SendError};
use std::net::TcpListener;
use std::time::Duration;

fn builder(url: &str) -> spool::Builder<Vec<u8>> {
    Queue::builder()
        .redis(url, "faults")
        .backoff(spool::Backoff::None)
}

#[test]
fn an_unreachable_server_fails_open_with_a_typed_error_in_bounded_time() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let opened = in_thread(move || builder(&url).open().map(drop));
    let error = opened
        .recv_timeout(WAIT)
        .expect("open returned in time")
        .unwrap_err();
    match error {
        OpenError::Storage(error) => assert!(error.is_unreachable(), "{error}"),
        other => panic!("expected an unreachable server, got {other:?}"),
    }
}

#[test]
fn a_server_killed_mid_run_gives_typed_errors_and_loses_nothing_acknowledged() {
    let mut server = RedisServer::start();
    let queue = builder(&server.url()).open().unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    let mut sent = Vec::new();
    for i in 0..100u32 {
        sent.push(producer.send(i.to_le_bytes().to_vec()).unwrap());
    }
    let acked = consumer.try_recv().unwrap();
    acked.ack().unwrap();
    let held = consumer.try_recv().unwrap();

    server.kill();
    // Every call fails with a typed error, in bounded time.
    let calls = {
        let (producer, consumer) = (producer.clone(), consumer.clone());
        in_thread(move || {
            let send = producer.send(vec![1]);
            let recv = consumer.recv_timeout(Duration::from_secs(1));
            (send, recv.map(drop))
        })
    };
    let (send, recv) = calls
        .recv_timeout(WAIT * 2)
        .expect("calls returned in time");
    match send {
        Err(SendError::Storage { error, message }) => {
            assert!(error.is_unreachable(), "{error}");
            assert_eq!(message, vec![1]);
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    match recv {
        Err(RecvError::Storage(error)) => assert!(error.is_unreachable(), "{error}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(queue.try_stats().unwrap_err().is_unreachable());
    match held.ack() {
        Err(spool::SettleError::Storage(error)) => assert!(error.is_unreachable(), "{error}"),
        other => panic!("expected a storage error, got {other:?}"),
    }

    // Restarted on its append-only file: the handles reconnect, and every
    // send that returned Ok is there but the one acknowledged; the one in
    // flight comes back when its lease runs out (default 30 s) or, here,
    // is still leased.
    server.restart();
    let stats = queue.try_stats().unwrap();
    assert_eq!(stats.sent, 100);
    assert_eq!(stats.acked, 1);
    assert_eq!(stats.ready + stats.in_flight, 99);
    let mut seen = 0;
    while let Ok(delivery) = consumer.try_recv() {
        delivery.ack().unwrap();
        seen += 1;
    }
    assert_eq!(seen, 98);
}

#[test]
fn a_server_at_maxmemory_refuses_sends_with_a_typed_error_and_still_drains() {
    let server =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let queue = builder(&server.url()).capacity(100_000).open().unwrap();
    let producer = queue.producer();
    let mut sent = 0u32;
    let refused = loop {
        match producer.try_send(vec![7; 16 * 1024]) {
            Ok(_) => sent += 1,
            Err(error) => break error,
        }
        assert!(sent < 10_000, "maxmemory never refused a send");
    };
    match refused {
        SendError::Storage { error, message } => {
            assert!(!error.is_unreachable(), "{error}");
            assert!(error.to_string().contains("OOM"), "{error}");
            assert_eq!(message.len(), 16 * 1024);
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(sent > 0);
    // Receives and acks still work at maxmemory, and free room.
    let consumer = queue.consumer();
    for _ in 0..sent {
        consumer.try_recv().unwrap().ack().unwrap();
    }
    let stats = queue.try_stats().unwrap();
    assert_eq!((stats.acked, stats.ready), (u64::from(sent), 0));
    producer.try_send(vec![1; 16]).unwrap();
}

#[test]
fn unsupported_settings_and_calls_are_refused_with_typed_errors() {
    let server = RedisServer::start();
    let refused = builder(&server.url())
        .clock(spool::ManualClock::new())
        .open();
    assert!(matches!(refused, Err(OpenError::Unsupported { .. })));
    let refused = builder(&server.url()).max_in_flight(2).open();
    assert!(matches!(refused, Err(OpenError::Unsupported { .. })));
    let refused = Queue::<u32>::builder().redis(server.url(), "a{b}").open();
    assert!(matches!(refused, Err(OpenError::Unsupported { .. })));
    let queue = builder(&server.url()).open().unwrap();
    assert!(queue.pause().unwrap_err().is_unsupported());
    let grouped = spool::SendOptions::new().group("customer-7");
    match queue.producer().send_with(vec![1], grouped) {
        Err(SendError::Storage { error, message }) => {
            assert!(error.is_unsupported(), "{error}");
            assert_eq!(message, vec![1]);
        }
        other => panic!("expected an unsupported send, got {other:?}"),
    }
    let urgent = spool::SendOptions::new().priority(spool::Priority::High);
    assert!(queue.producer().send_with(vec![1], urgent).is_err());
    assert_eq!(queue.try_stats().unwrap().sent, 0);
    assert!(queue.compact().unwrap_err().is_unsupported());
    assert!(matches!(
        queue.set_max_in_flight(Some(2)),
        Err(spool::LimitError::Unsupported { .. })
    ));
}

#[test]
fn with_replicas_required_a_change_waits_for_them_or_fails_saying_so() {
    let primary = RedisServer::start();
    let port = primary.port.to_string();
    let mut replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let queue = builder(&primary.url())
        .redis_replicas(1, Duration::from_millis(300))
        .open()
        .unwrap();
    let producer = queue.producer();
    // Until the replica has synced, a send is made but not acknowledged.
    let mut synced = false;
    for _ in 0..100 {
        if producer.send(vec![0]).is_ok() {
            synced = true;
            break;
        }
    }
    assert!(synced, "the replica never acknowledged a send");
    let before = queue.try_stats().unwrap().sent;
    replica.kill();
    let refused = in_thread(move || producer.send(vec![9]));
    match refused
        .recv_timeout(WAIT)
        .expect("the send returned in time")
    {
        Err(SendError::Storage { error, message }) => {
            assert!(!error.is_unreachable(), "{error}");
            assert!(error.to_string().contains("0 of 1 replicas"), "{error}");
            assert_eq!(message, vec![9]);
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    // Made on the primary all the same, as the error says.
    assert_eq!(queue.try_stats().unwrap().sent, before + 1);
    // Settings that only a Redis queue takes are refused elsewhere.
    let local = Queue::<u32>::builder()
        .redis_replicas(1, Duration::from_secs(1))
        .open();
    assert!(matches!(local, Err(OpenError::Unsupported { .. })));
}
