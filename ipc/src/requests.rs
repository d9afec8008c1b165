//! Request ids and per-request timeouts for requests answered by other workers
//! (`fetchSockets`, `serverSideEmit` with ack, broadcasts with acks).
//!
//! A request knows which workers owe it answers. It completes with `Ok` when none owes
//! anything any more, or at its deadline with [`Partial`] (what arrived so far and how
//! much was missing): no request can hang past its timeout. A worker that exits
//! ([`PendingRequests::worker_gone`]) stops being waited for, as in Node's `removeNode`.
//!
//! Broadcasts with acks: each worker first owes one `BroadcastClientCount`; on receiving
//! it, call [`PendingRequests::expect`] with the count, and then [`respond`](PendingRequests::respond)
//! for each `BroadcastAck`. (Both travel on one ordered stream, so the count comes first.)

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::message::{RequestId, WorkerIndex};

/// The requests of this worker that wait for answers. Cloning shares the same table.
pub struct PendingRequests<T> {
    table: Arc<Mutex<Table<T>>>,
}

struct Table<T> {
    next_id: RequestId,
    entries: HashMap<RequestId, Entry<T>>,
}

struct Entry<T> {
    /// Workers that still owe answers, with how many.
    owed: Vec<(WorkerIndex, u64)>,
    /// Answers so far, in order of arrival.
    responses: Vec<T>,
    done: oneshot::Sender<Vec<T>>,
}

impl<T> Entry<T> {
    fn missing(&self) -> u64 {
        self.owed.iter().map(|&(_, n)| n).sum()
    }
}

impl<T> Clone for PendingRequests<T> {
    fn clone(&self) -> Self {
        PendingRequests {
            table: self.table.clone(),
        }
    }
}

impl<T> Default for PendingRequests<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for PendingRequests<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRequests")
            .field("pending", &self.len())
            .finish()
    }
}

fn lock<T>(table: &Mutex<Table<T>>) -> MutexGuard<'_, Table<T>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> PendingRequests<T> {
    /// An empty table; ids start at 1.
    pub fn new() -> Self {
        Self::starting_at(1)
    }

    /// An empty table whose ids start at `first` (0 is never an id): a
    /// process that shares its worker index with another (the old and the
    /// new process of a reload) starts where the other's ids do not reach.
    pub fn starting_at(first: RequestId) -> Self {
        PendingRequests {
            table: Arc::new(Mutex::new(Table {
                next_id: first.max(1),
                entries: HashMap::new(),
            })),
        }
    }

    /// Registers a request that each worker of `workers` answers once, with a deadline
    /// `timeout` from now (must be called within a tokio runtime). With no worker, the
    /// collector resolves at once with `Ok(vec![])`.
    pub fn register(
        &self,
        workers: impl IntoIterator<Item = WorkerIndex>,
        timeout: Duration,
    ) -> (RequestId, ResponseCollector<T>) {
        let mut owed: Vec<(WorkerIndex, u64)> = Vec::new();
        for w in workers {
            if !owed.iter().any(|&(o, _)| o == w) {
                owed.push((w, 1));
            }
        }
        let (done, rx) = oneshot::channel();
        let deadline = Box::pin(tokio::time::sleep(timeout));
        let mut table = lock(&self.table);
        let id = table.next_id;
        table.next_id = table.next_id.wrapping_add(1).max(1);
        if owed.is_empty() {
            let _ = done.send(Vec::new());
        } else {
            let responses = Vec::new();
            table.entries.insert(
                id,
                Entry {
                    owed,
                    responses,
                    done,
                },
            );
        }
        drop(table);
        let collector = ResponseCollector {
            id,
            table: self.table.clone(),
            rx,
            deadline,
        };
        (id, collector)
    }

    /// Records `value` from worker `from` for request `id`. Ignored (returns false) when the
    /// request is unknown (finished, timed out, dropped) or `from` owes it nothing.
    pub fn respond(&self, id: RequestId, from: WorkerIndex, value: T) -> bool {
        let mut table = lock(&self.table);
        let Some(entry) = table.entries.get_mut(&id) else {
            return false;
        };
        let Some(pos) = entry.owed.iter().position(|&(w, _)| w == from) else {
            return false;
        };
        entry.responses.push(value);
        entry.owed[pos].1 -= 1;
        if entry.owed[pos].1 == 0 {
            entry.owed.swap_remove(pos);
        }
        finish_if_done(table, id);
        true
    }

    /// Sets how many answers worker `from` still owes request `id` (e.g. on
    /// `BroadcastClientCount`: one ack per client; 0 = nothing more). Ignored (returns
    /// false) when the request is unknown or `from` owes it nothing.
    pub fn expect(&self, id: RequestId, from: WorkerIndex, count: u64) -> bool {
        let mut table = lock(&self.table);
        let Some(entry) = table.entries.get_mut(&id) else {
            return false;
        };
        let Some(pos) = entry.owed.iter().position(|&(w, _)| w == from) else {
            return false;
        };
        if count == 0 {
            entry.owed.swap_remove(pos);
        } else {
            entry.owed[pos].1 = count;
        }
        finish_if_done(table, id);
        true
    }

    /// Stops waiting for `worker` in every request; those that only waited on it complete
    /// with `Ok` and the answers received.
    pub fn worker_gone(&self, worker: WorkerIndex) {
        let mut table = lock(&self.table);
        let mut finished = Vec::new();
        for (id, entry) in table.entries.iter_mut() {
            entry.owed.retain(|&(w, _)| w != worker);
            if entry.owed.is_empty() {
                finished.push(*id);
            }
        }
        let done: Vec<_> = finished
            .into_iter()
            .filter_map(|id| table.entries.remove(&id))
            .collect();
        drop(table);
        for entry in done {
            let _ = entry.done.send(entry.responses);
        }
    }

    /// Number of requests still waiting.
    pub fn len(&self) -> usize {
        lock(&self.table).entries.len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Completes request `id` if nobody owes it anything (the answers are sent after unlocking).
fn finish_if_done<T>(mut table: MutexGuard<'_, Table<T>>, id: RequestId) {
    if table.entries.get(&id).is_some_and(|e| e.owed.is_empty()) {
        let entry = table.entries.remove(&id);
        drop(table);
        if let Some(entry) = entry {
            let _ = entry.done.send(entry.responses);
        }
    }
}

/// Resolves to every answer (in order of arrival), or to [`Partial`] at the deadline.
/// Dropping it forgets the request (later answers are ignored).
pub struct ResponseCollector<T> {
    id: RequestId,
    table: Arc<Mutex<Table<T>>>,
    rx: oneshot::Receiver<Vec<T>>,
    deadline: Pin<Box<Sleep>>,
}

impl<T> ResponseCollector<T> {
    /// The id of the request.
    pub fn id(&self) -> RequestId {
        self.id
    }
}

impl<T> fmt::Debug for ResponseCollector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCollector")
            .field("id", &self.id)
            .finish()
    }
}

impl<T> Future for ResponseCollector<T> {
    type Output = Result<Vec<T>, Partial<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(res) = Pin::new(&mut this.rx).poll(cx) {
            // The sender only goes away by sending, or when the collector removed the entry.
            return Poll::Ready(res.map_err(|_| Partial::empty()));
        }
        if this.deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match lock(&this.table).entries.remove(&this.id) {
            Some(entry) => Poll::Ready(Err(Partial {
                missing: entry.missing(),
                missing_workers: entry.owed.iter().map(|&(w, _)| w).collect(),
                responses: entry.responses,
            })),
            // Completed concurrently: the answers are being sent, and wake us.
            None => Pin::new(&mut this.rx)
                .poll(cx)
                .map(|res| res.map_err(|_| Partial::empty())),
        }
    }
}

impl<T> Drop for ResponseCollector<T> {
    fn drop(&mut self) {
        let entry = lock(&self.table).entries.remove(&self.id);
        drop(entry);
    }
}

/// A request that timed out: the answers that arrived, and what was missing.
#[derive(Clone, PartialEq, Eq)]
pub struct Partial<T> {
    /// The answers that arrived, in order of arrival.
    pub responses: Vec<T>,
    /// How many answers were missing.
    pub missing: u64,
    /// The workers that still owed answers.
    pub missing_workers: Vec<WorkerIndex>,
}

impl<T> Partial<T> {
    fn empty() -> Self {
        Partial {
            responses: Vec::new(),
            missing: 0,
            missing_workers: Vec::new(),
        }
    }
}

impl<T> fmt::Display for Partial<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timeout reached: missing {} responses", self.missing)
    }
}

impl<T> fmt::Debug for Partial<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partial")
            .field("responses", &self.responses.len())
            .field("missing", &self.missing)
            .field("missing_workers", &self.missing_workers)
            .finish()
    }
}

impl<T> std::error::Error for Partial<T> {}
