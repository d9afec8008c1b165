//! `rooms`: C clients in N small rooms over the W ports of a cluster (one
//! port per worker), one sender per room; server CPU per delivery, the
//! primary's share of it, and a check that every member of a room gets every
//! broadcast of its room exactly once.
//!
//! Placement (client `i` is member `j = i div N` of room `r = i mod N`):
//! - `local`: every member of room `r` on worker `r mod W`, so a broadcast
//!   never leaves its worker's rooms (with W dividing N this is the issue's
//!   "room i mod N, worker i mod W");
//! - `spread`: member `j` of room `r` on worker `(r + j) mod W`, so a room of
//!   k members spans min(W, k) workers.
//!
//! Either way each worker holds N/W rooms' worth of clients and senders when
//! W divides N. The sender of room `r` is its member 0 (client `r`).

use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::{sleep, sleep_until};

use crate::{
    client::{wait_signal, Ws},
    clock::{at_us, now_us, start},
    frame::{self, Frame},
    procfs::{proc_cpu_ns, sample},
    report::{latency, per_op_us, sys_fraction},
    run::{handle_ready, progress, setup, Handled, Run, Setup, Shared},
    Cli,
};

/// Where the members of a room sit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// Every room on one worker.
    Local,
    /// Every room over min(W, room size) workers.
    Spread,
}

/// Who is where: the room, worker and role of each client.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub clients: usize,
    pub rooms: usize,
    pub workers: usize,
    pub placement: Placement,
}

impl Plan {
    pub fn room(&self, i: usize) -> usize {
        i % self.rooms
    }

    pub fn worker(&self, i: usize) -> usize {
        let (r, j) = (i % self.rooms, i / self.rooms);
        match self.placement {
            Placement::Local => r % self.workers,
            Placement::Spread => (r + j) % self.workers,
        }
    }

    /// Member 0 of each room sends.
    pub fn is_sender(&self, i: usize) -> bool {
        i < self.rooms
    }

    pub fn members(&self, room: usize) -> u64 {
        (self.clients / self.rooms + usize::from(room < self.clients % self.rooms)) as u64
    }

    /// Distinct workers with members of `room`.
    pub fn workers_of(&self, room: usize) -> usize {
        let mut seen = vec![false; self.workers];
        (room..self.clients)
            .step_by(self.rooms)
            .for_each(|i| seen[self.worker(i)] = true);
        seen.iter().filter(|s| **s).count()
    }

    /// Workers a broadcast reaches, averaged over the rooms (the sender's
    /// own worker included).
    pub fn workers_reached(&self) -> f64 {
        let total: usize = (0..self.rooms).map(|r| self.workers_of(r)).sum();
        total as f64 / self.rooms as f64
    }
}

/// What the clients of a `rooms` run share besides [`Shared`].
struct Rooms {
    plan: Plan,
    names: Vec<String>,
    /// Broadcasts each sender emits.
    count: u64,
    /// Deliveries owed so far: Σ over the sent broadcasts of their room's members.
    expected: Cell<u64>,
    /// A broadcast a member had already received.
    duplicates: Cell<u64>,
    /// A delivery of another room's broadcast, or one that no sender sent.
    misdelivered: Cell<u64>,
    /// When the sends start, set just before `go`.
    origin: Cell<Option<Instant>>,
}

/// Which broadcasts of its room a member received (one bit per sequence number).
struct Seen(Vec<u64>);

impl Seen {
    fn new(count: u64) -> Seen {
        Seen(vec![0; count.div_ceil(64) as usize])
    }

    /// Marks `seq`; false if it was marked already.
    fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

async fn room_client(shared: Rc<Shared>, rooms: Rc<Rooms>, mut s: Setup, i: usize, port: u16) {
    let room = rooms.plan.room(i);
    let Some(mut ws) = setup(&shared, &mut s, port, Some(&rooms.names[room])).await else {
        return;
    };
    let mut stop = s.stop.clone();
    if let Err(e) = room_loop(&shared, &rooms, &mut ws, i, &mut stop).await {
        shared.error(e);
    }
}

/// Counts the deliveries of the member's room; the sender also emits its
/// room's `count` broadcasts, one per period, staggered by room.
async fn room_loop(
    shared: &Shared,
    rooms: &Rooms,
    ws: &mut Ws,
    i: usize,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let plan = rooms.plan;
    let room = plan.room(i);
    let period = Duration::from_secs_f64(plan.rooms as f64 / shared.cli.rate);
    let count = if plan.is_sender(i) { rooms.count } else { 0 };
    let origin = rooms.origin.get().unwrap_or_else(Instant::now);
    let first = origin + period.mul_f64(room as f64 / plan.rooms as f64);
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seen = Seen::new(rooms.count);
    let mut sent = 0u64;
    let members = plan.members(room);
    let stopped = wait_signal(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return Ok(()),
            _ = ticks.tick(), if sent < count => {
                let text = frame::room_broadcast(&rooms.names[room], room, now_us(), sent, shared.cli.payload);
                ws.send(crate::msgpack::message(text)).await?;
                sent += 1;
                shared.sent.set(shared.sent.get() + 1);
                rooms.expected.set(rooms.expected.get() + members);
            }
            m = ws.next() => {
                handle_ready(shared, ws, m, |f, text| match f {
                    Frame::Event { name: "bcast", rest } => {
                        let now = now_us();
                        let (ts, from, seq) = frame::room_delivery(rest)
                            .ok_or_else(|| anyhow!("bcast without room and sequence: {text}"))?;
                        if from != room || seq >= rooms.count {
                            rooms.misdelivered.set(rooms.misdelivered.get() + 1);
                        } else if seen.insert(seq) {
                            shared.ops.set(shared.ops.get() + 1);
                            shared.last_delivery_us.set(now);
                            shared.record(now.saturating_sub(ts));
                        } else {
                            rooms.duplicates.set(rooms.duplicates.get() + 1);
                        }
                        Ok(Handled::Done)
                    }
                    _ => Ok(Handled::Unexpected),
                })
                .await?;
            }
        }
    }
}

pub async fn run_rooms(cli: &Cli) -> Result<Value> {
    if cli.rooms == 0 || cli.clients < cli.rooms {
        bail!("rooms needs at least one client per room (--clients ≥ --rooms ≥ 1)");
    }
    if cli.rate <= 0.0 {
        bail!("rooms needs --rate > 0");
    }
    let plan = Plan {
        clients: cli.clients,
        rooms: cli.rooms,
        workers: cli.ports.len(),
        placement: cli.placement,
    };
    let count = (cli.rate / plan.rooms as f64 * cli.duration)
        .round()
        .max(1.0) as u64;
    let rooms = Rc::new(Rooms {
        plan,
        names: (0..plan.rooms).map(|r| format!("room{r}")).collect(),
        count,
        expected: Cell::new(0),
        duplicates: Cell::new(0),
        misdelivered: Cell::new(0),
        origin: Cell::new(None),
    });
    let mut run = Run::new(cli);
    for i in 0..plan.clients {
        let port = cli.ports[plan.worker(i)];
        let task = room_client(run.shared.clone(), rooms.clone(), run.setup(), i, port);
        run.tasks.push(tokio::task::spawn_local(task));
    }
    let ok = run.wait_ready(plan.clients, "rooms").await;
    if ok < plan.clients {
        // The loss check counts on every member being there.
        let first = run.shared.first_error.borrow().clone().unwrap_or_default();
        run.finish().await;
        bail!(
            "{ok} of {} clients joined their room: {first}",
            plan.clients
        );
    }
    // Let the joins settle (a cluster tells the other workers), then go.
    sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now() + Duration::from_millis(50);
    rooms.origin.set(Some(t0));
    let _ = run.go_tx.send(true);
    let prog = progress(run.shared.clone(), "deliveries");
    sleep_until(t0.into()).await;
    let primary = cli.primary_pid.and_then(proc_cpu_ns);
    let a = sample(&cli.pids);
    let shared = run.shared.clone();
    let expected_sends = plan.rooms as u64 * count;
    let give_up = t0 + Duration::from_secs_f64(cli.duration + cli.drain);
    loop {
        let done = shared.sent.get() >= expected_sends && shared.ops.get() >= rooms.expected.get();
        if done || Instant::now() >= give_up {
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    let b = sample(&cli.pids);
    let primary = primary.zip(cli.primary_pid.and_then(proc_cpu_ns));
    prog.abort();
    let end = if shared.last_delivery_us.get() > at_us(t0) {
        start() + Duration::from_micros(shared.last_delivery_us.get())
    } else {
        Instant::now()
    };
    let seconds = end.saturating_duration_since(t0).as_secs_f64().max(1e-6);
    run.finish().await;
    let delivered = shared.ops.get();
    let sent = shared.sent.get();
    let expected = rooms.expected.get();
    let cpu_s = b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e9;
    let primary_s = primary.map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
    let hist = shared.hist.borrow();
    Ok(json!({
        "workers": plan.workers,
        "rooms": plan.rooms,
        "placement": format!("{:?}", plan.placement).to_lowercase(),
        "room_size": plan.clients as f64 / plan.rooms as f64,
        "workers_reached": plan.workers_reached(),
        "connections": ok,
        "senders": plan.rooms,
        "rate": cli.rate,
        "payload": cli.payload,
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "duplicates": rooms.duplicates.get(),
        "misdelivered": rooms.misdelivered.get(),
        "seconds": seconds,
        "ops": delivered,
        "ops_per_s": delivered as f64 / seconds,
        "latency_us": latency(&hist),
        "server_cpu_us_per_op": per_op_us(cpu_s, delivered),
        "server_cpu_us_per_broadcast": per_op_us(cpu_s, sent),
        "server_wakeups_per_broadcast": b.wakeups.saturating_sub(a.wakeups) as f64 / sent.max(1) as f64,
        "server_sys_fraction": sys_fraction(&a, &b),
        "server_cpu_share": cpu_s / seconds,
        "primary_cpu_us_per_op": primary_s.map_or(Value::Null, |p| per_op_us(p, delivered)),
        "primary_share": primary_s.filter(|_| cpu_s > 0.0).map(|p| p / cpu_s),
        "loadgen_cpu_us_per_op": per_op_us(b.self_cpu_s - a.self_cpu_s, delivered),
        "server_rss": b.rss,
        "server_processes": b.processes,
        "unexpected": shared.unexpected.get(),
        "errors": shared.errors.get(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(clients: usize, rooms: usize, workers: usize, placement: Placement) -> Plan {
        Plan {
            clients,
            rooms,
            workers,
            placement,
        }
    }

    #[test]
    fn local_keeps_each_room_on_one_worker() {
        for w in [1, 2, 4, 8] {
            let p = plan(1000, 200, w, Placement::Local);
            for r in 0..200 {
                assert_eq!(p.workers_of(r), 1, "W={w} room {r}");
                assert_eq!(p.members(r), 5);
            }
            assert_eq!(p.workers_reached(), 1.0);
            // The setup: room i mod 200 on worker i mod W.
            for i in 0..1000 {
                assert_eq!(p.worker(i), i % w);
            }
        }
    }

    #[test]
    fn spread_puts_a_room_on_as_many_workers_as_it_can() {
        for (w, reached) in [(1, 1), (2, 2), (4, 4), (8, 5), (16, 5)] {
            let p = plan(1000, 200, w, Placement::Spread);
            for r in 0..200 {
                assert_eq!(p.workers_of(r), reached, "W={w} room {r}");
            }
            assert_eq!(p.workers_reached(), reached as f64);
        }
    }

    #[test]
    fn every_worker_gets_the_same_clients_and_senders() {
        for placement in [Placement::Local, Placement::Spread] {
            for w in [1, 2, 4, 8] {
                let p = plan(1000, 200, w, placement);
                let mut clients = vec![0; w];
                let mut senders = vec![0; w];
                for i in 0..1000 {
                    clients[p.worker(i)] += 1;
                    if p.is_sender(i) {
                        senders[p.worker(i)] += 1;
                        assert_eq!(p.room(i), i);
                    }
                }
                assert!(
                    clients.iter().all(|c| *c == 1000 / w),
                    "{placement:?} W={w}: {clients:?}"
                );
                assert!(
                    senders.iter().all(|s| *s == 200 / w),
                    "{placement:?} W={w}: {senders:?}"
                );
            }
        }
    }

    #[test]
    fn uneven_rooms_count_their_members() {
        let p = plan(11, 4, 3, Placement::Spread);
        assert_eq!(
            (0..4).map(|r| p.members(r)).collect::<Vec<_>>(),
            [3, 3, 3, 2]
        );
        assert_eq!((0..4).map(|r| p.members(r)).sum::<u64>(), 11);
    }

    #[test]
    fn seen_flags_duplicates() {
        let mut s = Seen::new(130);
        assert!(s.insert(0));
        assert!(s.insert(129));
        assert!(!s.insert(129));
        assert!(s.insert(64));
        assert!(!s.insert(0));
    }
}
