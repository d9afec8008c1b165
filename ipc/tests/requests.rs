//! Request ids, answers and timeouts.

use std::time::Duration;

use rsio_ipc::PendingRequests;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn all_answers_complete_in_order_of_arrival() {
    let pending = PendingRequests::<&str>::new();
    let (id, collector) = pending.register([1, 2, 3], T);
    assert_eq!(pending.len(), 1);
    assert!(pending.respond(id, 3, "three"));
    assert!(pending.respond(id, 1, "one"));
    assert!(pending.respond(id, 2, "two"));
    let start = Instant::now();
    assert_eq!(collector.await.unwrap(), vec!["three", "one", "two"]);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(pending.is_empty());
}

#[tokio::test(start_paused = true)]
async fn ids_are_distinct() {
    let pending = PendingRequests::<()>::new();
    let (a, _ca) = pending.register([1], T);
    let (b, _cb) = pending.register([1], T);
    assert_ne!(a, b);
    assert_ne!(a, 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_gives_the_partial_list_and_missing_count() {
    let pending = PendingRequests::new();
    let (id, collector) = pending.register([1, 2, 3], T);
    assert!(pending.respond(id, 2, 20));
    let start = Instant::now();
    let partial = collector.await.unwrap_err();
    assert_eq!(start.elapsed(), T);
    assert_eq!(partial.responses, vec![20]);
    assert_eq!(partial.missing, 2);
    let mut missing = partial.missing_workers.clone();
    missing.sort();
    assert_eq!(missing, vec![1, 3]);
    assert_eq!(partial.to_string(), "timeout reached: missing 2 responses");
    assert!(pending.is_empty());
    // Late answers are ignored.
    assert!(!pending.respond(id, 1, 10));
}

#[tokio::test(start_paused = true)]
async fn worker_gone_completes_early() {
    let pending = PendingRequests::new();
    let (id, collector) = pending.register([1, 2], T);
    let (other, other_collector) = pending.register([2, 3], T);
    assert!(pending.respond(id, 1, "a"));
    let start = Instant::now();
    pending.worker_gone(2);
    assert_eq!(collector.await.unwrap(), vec!["a"]);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // The other request still waits for worker 3.
    assert_eq!(pending.len(), 1);
    assert!(!pending.respond(other, 2, "late"));
    assert!(pending.respond(other, 3, "c"));
    assert_eq!(other_collector.await.unwrap(), vec!["c"]);
}

#[tokio::test(start_paused = true)]
async fn unknown_ids_and_unexpected_workers_are_ignored() {
    let pending = PendingRequests::new();
    let (id, collector) = pending.register([1, 2], T);
    assert!(!pending.respond(id + 100, 1, 0));
    assert!(!pending.respond(id, 9, 0));
    assert!(pending.respond(id, 1, 1));
    // A second answer from the same worker is not counted.
    assert!(!pending.respond(id, 1, 11));
    assert!(!pending.expect(id + 100, 2, 3));
    assert!(pending.respond(id, 2, 2));
    assert_eq!(collector.await.unwrap(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn no_worker_resolves_at_once() {
    let pending = PendingRequests::<u8>::new();
    let (_, collector) = pending.register([], T);
    assert!(pending.is_empty());
    let start = Instant::now();
    assert_eq!(collector.await.unwrap(), Vec::<u8>::new());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_collector_forgets_the_request() {
    let pending = PendingRequests::new();
    let (id, collector) = pending.register([1], T);
    drop(collector);
    assert!(pending.is_empty());
    assert!(!pending.respond(id, 1, ()));
}

#[tokio::test(start_paused = true)]
async fn broadcast_acks_follow_client_counts() {
    let pending = PendingRequests::new();
    let (id, collector) = pending.register([0, 1, 2], T);
    assert!(pending.expect(id, 0, 2)); // local: 2 clients
    assert!(pending.expect(id, 1, 0)); // worker 1: no client
    assert!(pending.respond(id, 0, "a"));
    assert!(pending.expect(id, 2, 1));
    assert!(pending.respond(id, 2, "b"));
    assert_eq!(pending.len(), 1);
    assert!(pending.respond(id, 0, "c"));
    assert!(!pending.respond(id, 0, "extra"));
    assert_eq!(collector.await.unwrap(), vec!["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn broadcast_ack_timeout_counts_missing_acks() {
    let pending = PendingRequests::new();
    let (id, collector) = pending.register([0, 1], T);
    assert!(pending.expect(id, 0, 3));
    assert!(pending.respond(id, 0, 1));
    let partial = collector.await.unwrap_err();
    // Two acks of worker 0 and the client count of worker 1.
    assert_eq!(partial.missing, 3);
    assert_eq!(partial.responses, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_other_threads() {
    let pending = PendingRequests::new();
    let workers: Vec<u16> = (0..64).collect();
    let (id, collector) = pending.register(workers.clone(), Duration::from_secs(30));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| {
            let p = pending.clone();
            tokio::spawn(async move { assert!(p.respond(id, w, w)) })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let mut got = collector.await.unwrap();
    got.sort();
    assert_eq!(got, (0..64).collect::<Vec<u16>>());
}
