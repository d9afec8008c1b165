//! What every client of a run shares (counters, histogram, signals), and the
//! driver that sets clients up with bounded concurrency and starts them together.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::{
    sync::{mpsc, watch, Semaphore},
    time::sleep,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::{
    client::{idle, join, open, wait_signal, Ws},
    frame::{self, Frame},
    Cli,
};

pub struct Shared {
    pub cli: Cli,
    /// Operations counted (acks in the window, deliveries, connections).
    pub ops: Cell<u64>,
    /// Broadcasts sent.
    pub sent: Cell<u64>,
    pub errors: Cell<u64>,
    pub first_error: RefCell<Option<String>>,
    pub hist: RefCell<Histogram<u64>>,
    /// `echo`: the measured window, µs since start.
    pub window: Cell<(u64, u64)>,
    /// `broadcast`: when the last delivery arrived, µs since start.
    pub last_delivery_us: Cell<u64>,
    /// Frames that were not expected in the scenario.
    pub unexpected: Cell<u64>,
}

impl Shared {
    pub fn error(&self, err: anyhow::Error) {
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(format!("{err:#}"));
        }
    }

    pub fn record(&self, latency_us: u64) {
        let _ = self.hist.borrow_mut().record(latency_us.max(1));
    }
}

pub struct Setup {
    pub ready: mpsc::UnboundedSender<Result<()>>,
    pub go: watch::Receiver<bool>,
    pub stop: watch::Receiver<bool>,
    pub permits: Rc<Semaphore>,
}

/// Connects (holding a permit of the bounded concurrency), optionally joins
/// `room`, tells the main task, and waits for `go`.
pub async fn setup(shared: &Shared, s: &mut Setup, port: u16, room: Option<&str>) -> Option<Ws> {
    let res = async {
        let _permit = s.permits.acquire().await?;
        let mut ws = tokio::time::timeout(Duration::from_secs(15), open(&shared.cli.host, port))
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        if let Some(room) = room {
            tokio::time::timeout(Duration::from_secs(15), join(&mut ws, room))
                .await
                .map_err(|_| anyhow!("join timed out"))??;
        }
        anyhow::Ok(ws)
    }
    .await;
    match res {
        Ok(mut ws) => {
            let _ = s.ready.send(Ok(()));
            let mut go = s.go.clone();
            let mut stop = s.stop.clone();
            let started = idle(&mut ws, async {
                tokio::select! {
                    _ = wait_signal(&mut go) => true,
                    _ = wait_signal(&mut stop) => false,
                }
            })
            .await;
            match started {
                Ok(true) => Some(ws),
                Ok(false) => None,
                Err(e) => {
                    shared.error(e);
                    None
                }
            }
        }
        Err(e) => {
            let _ = s.ready.send(Err(e));
            None
        }
    }
}

pub struct Run {
    pub shared: Rc<Shared>,
    pub ready_rx: mpsc::UnboundedReceiver<Result<()>>,
    pub ready_tx: mpsc::UnboundedSender<Result<()>>,
    pub go_tx: watch::Sender<bool>,
    pub stop_tx: watch::Sender<bool>,
    pub permits: Rc<Semaphore>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Run {
    pub fn new(cli: &Cli) -> Run {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        Run {
            shared: Rc::new(Shared {
                cli: cli.clone(),
                ops: Cell::new(0),
                sent: Cell::new(0),
                errors: Cell::new(0),
                first_error: RefCell::new(None),
                hist: RefCell::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()),
                window: Cell::new((0, 0)),
                last_delivery_us: Cell::new(0),
                unexpected: Cell::new(0),
            }),
            ready_rx,
            ready_tx,
            go_tx: watch::channel(false).0,
            stop_tx: watch::channel(false).0,
            permits: Rc::new(Semaphore::new(cli.concurrency.max(1))),
            tasks: Vec::new(),
        }
    }

    pub fn setup(&self) -> Setup {
        Setup {
            ready: self.ready_tx.clone(),
            go: self.go_tx.subscribe(),
            stop: self.stop_tx.subscribe(),
            permits: self.permits.clone(),
        }
    }

    /// Waits for `n` clients to be set up; returns how many succeeded.
    pub async fn wait_ready(&mut self, n: usize, label: &str) -> usize {
        let mut ok = 0;
        let quiet = self.shared.cli.quiet;
        let mut last = Instant::now();
        for i in 0..n {
            match self.ready_rx.recv().await {
                Some(Ok(())) => ok += 1,
                Some(Err(e)) => self.shared.error(e),
                None => break,
            }
            if !quiet && last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                eprintln!("  {label}: {}/{n} clients set up", i + 1);
            }
        }
        ok
    }

    pub async fn finish(self) {
        let _ = self.stop_tx.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

pub fn spread(ports: &[u16], i: usize) -> u16 {
    ports[i % ports.len()]
}

pub fn progress(shared: Rc<Shared>, what: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        if shared.cli.quiet {
            return;
        }
        let t0 = Instant::now();
        let mut last = 0;
        loop {
            sleep(Duration::from_secs(1)).await;
            let ops = shared.ops.get();
            eprintln!(
                "  [{} {:?} {:>5.1}s] {what}: {ops} (+{}/s), errors {}",
                shared.cli.label,
                shared.cli.scenario,
                t0.elapsed().as_secs_f64(),
                ops - last,
                shared.errors.get()
            );
            last = ops;
        }
    })
}

/// What a scenario made of a frame from the server.
pub enum Handled {
    /// Expected; nothing to send.
    Done,
    /// Expected; send this (written with the others once the batch is handled).
    Reply(Message),
    /// Not a frame this scenario expects (counted).
    Unexpected,
}

/// Handles `first` and every frame already readable after it with
/// `on_frame`, answering pings, then writes all the replies at once.
pub async fn handle_ready(
    shared: &Shared,
    ws: &mut Ws,
    first: Option<Result<Message, WsError>>,
    mut on_frame: impl FnMut(Frame<'_>, &str) -> Result<Handled>,
) -> Result<()> {
    let mut msg = first;
    let mut written = false;
    loop {
        let text = match msg {
            None => bail!("connection closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => crate::msgpack::to_text(&b)
                .map(Into::into)
                .unwrap_or_default(),
            Some(Ok(Message::Close(_))) => bail!("closed by the server"),
            Some(Ok(_)) => Default::default(),
        };
        let handled = match frame::parse(&text) {
            Frame::Ping => Handled::Reply(Message::text("3")),
            Frame::Close => bail!("session closed by the server"),
            _ if text.is_empty() => Handled::Done,
            f => on_frame(f, &text)?,
        };
        match handled {
            Handled::Done => {}
            Handled::Reply(m) => {
                ws.feed(m).await?;
                written = true;
            }
            Handled::Unexpected => shared.unexpected.set(shared.unexpected.get() + 1),
        }
        match ws.next().now_or_never() {
            Some(m) => msg = m,
            None => break,
        }
    }
    if written {
        ws.flush().await?;
    }
    Ok(())
}
