//! Per-customer order with customers worked in parallel (issue 14).
//!
//! An order service receives events for several customers: each
//! customer's events must be applied in the order they were sent
//! (`created` before `paid` before `shipped`), but one customer must never
//! wait for another. Each event is sent with the customer as its message
//! group, so the queue hands out one event per customer at a time, in
//! send order, to a pool of three workers.
//!
//! Carol's payment fails twice (her bank times out), and her bank stays
//! slow until the other customers' orders have shipped, before it goes
//! through. Her `shipped` event waits behind it, through the retries and
//! their backoff, while Alice's, Bob's and Dave's events go on: if Carol
//! held them, her payment would use up its attempts and the example would
//! fail. A refund sent at high priority overtakes the queue.
//!
//! The example checks what it promises and finishes in well under a
//! second. Run with `cargo run --example ordering`.

use spool::{Backoff, Job, Outcome, Priority, Queue, SendOptions, Workers};
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Event {
    customer: String,
    step: String,
}

fn main() -> Result<(), Box<dyn Error>> {
    let queue: Queue<Event> = Queue::builder()
        .max_receives(50)
        .backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(20),
        ))
        .open()?;

    // What the workers applied, in the order they applied it.
    let applied = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let log = Arc::clone(&applied);
    let pool = Workers::new(queue.consumer())
        .threads(3)
        .name("orders")
        .spawn_jobs(move |job: Job<Event>| {
            let event = job.payload();
            let attempt = job.receive_count();
            let mut log = log.lock().unwrap();
            if event.customer == "carol" && event.step == "paid" {
                if attempt <= 2 {
                    let failed = format!("paid failed (attempt {attempt})");
                    log.push((event.customer.clone(), failed));
                    return Ok::<_, String>(Outcome::Retry); // backoff, then again
                }
                let shipped = log.iter().filter(|(_, step)| step == "shipped").count();
                if shipped < 3 {
                    return Ok(Outcome::Retry); // the bank is still slow
                }
            }
            log.push((event.customer.clone(), event.step.clone()));
            Ok(Outcome::Ack)
        })?;

    let producer = queue.producer();
    for step in ["created", "paid", "shipped"] {
        for customer in ["alice", "bob", "carol", "dave"] {
            let event = Event {
                customer: customer.to_string(),
                step: step.to_string(),
            };
            producer.send_with(event, SendOptions::new().group(customer))?;
        }
    }
    let refund = Event {
        customer: "erin".to_string(),
        step: "refunded".to_string(),
    };
    producer.send_with(refund, SendOptions::new().priority(Priority::High))?;

    queue.close(); // the workers drain the queue, then stop
    let report = pool.join(Duration::from_secs(10));
    assert!(report.unfinished.is_empty(), "unfinished: {report:?}");

    let applied = applied.lock().unwrap().clone();
    let mut by_customer: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (customer, step) in &applied {
        by_customer.entry(customer).or_default().push(step);
    }
    for (customer, steps) in &by_customer {
        println!("{customer:>6}: {}", steps.join(" -> "));
    }

    // Each customer's events in send order, Carol's failures included.
    for customer in ["alice", "bob", "dave"] {
        assert_eq!(by_customer[customer], ["created", "paid", "shipped"]);
    }
    assert_eq!(
        by_customer["carol"],
        [
            "created",
            "paid failed (attempt 1)",
            "paid failed (attempt 2)",
            "paid",
            "shipped"
        ]
    );
    // Carol held only Carol: the others' orders shipped while her
    // payment was being retried.
    let position = |customer: &str, step: &str| {
        applied
            .iter()
            .position(|(c, s)| c == customer && s == step)
            .expect("applied")
    };
    let carol_paid = position("carol", "paid");
    for customer in ["alice", "bob", "dave"] {
        assert!(position(customer, "shipped") < carol_paid);
    }
    // The refund overtook the events sent before it that were still
    // waiting: it was not last.
    assert!(position("erin", "refunded") < applied.len() - 1);
    println!("alice, bob and dave shipped while carol's payment was retried");
    let stats = queue.stats();
    println!("acked {}, dead letters {}", stats.acked, stats.dead_letters);
    assert_eq!((stats.acked, stats.dead_letters), (13, 0));
    Ok(())
}
