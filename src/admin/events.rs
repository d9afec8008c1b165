//! What the page hears as it happens: `socket_connected`, `socket_disconnected`,
//! `room_joined` and `room_left`, sent to the admin namespace through the adapter,
//! so that a page connected to any worker hears those of every worker.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::{json, Value};

use super::NAMESPACE;
use crate::{
    adapter::RoomEvent,
    server::{IntoArgs, Namespace, ServerInnerRef, Socket},
};

/// How long a worker keeps sending after the last sign that a page is open on
/// another worker (pages' workers send one every stats round, [`super::stats::EVERY`]).
const WATCHED_FOR_MS: u64 = 5_000;

/// The admin side's view of one server: the namespaces it watches. Holds the
/// server weakly, so that the hooks do not keep it alive.
///
/// Nothing is sent while no page is open anywhere in the cluster: a worker sends
/// while it has a page itself, or for [`WATCHED_FOR_MS`] after another worker said
/// it has one. A page that opens gets the full socket list anyway.
pub struct Hub {
    server: ServerInnerRef,
    /// Names of the hooked namespaces, in creation order.
    names: Mutex<Vec<String>>,
    /// Until when (Unix ms) another worker has a page open.
    watched_until: AtomicU64,
}

impl Hub {
    /// A hub for `server`, watching nothing yet.
    pub fn new(server: ServerInnerRef) -> Arc<Hub> {
        Arc::new(Hub {
            server,
            names: Mutex::default(),
            watched_until: AtomicU64::new(0),
        })
    }

    /// Whether a page is open on this worker.
    pub fn has_page(&self) -> bool {
        self.admin().is_some_and(|a| a.socket_count() > 0)
    }

    /// Whether a page is open anywhere (as far as this worker knows).
    pub fn watched(&self) -> bool {
        self.watched_until.load(Ordering::Relaxed) > unix_millis() || self.has_page()
    }

    /// Another worker has a page open.
    pub fn watched_elsewhere(&self) {
        self.watched_until
            .store(unix_millis() + WATCHED_FOR_MS, Ordering::Relaxed);
    }

    /// The admin namespace, while the server lives.
    pub fn admin(&self) -> Option<Namespace> {
        self.server.namespace(NAMESPACE)
    }

    /// An existing namespace of the server.
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.server.namespace(name)
    }

    /// The hooked namespaces (the list is copied out before they are looked up).
    pub fn namespaces(&self) -> Vec<Namespace> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        names.iter().filter_map(|n| self.namespace(n)).collect()
    }

    /// Sends `event` to every page, on every worker (nothing when none is open).
    pub fn notify(&self, event: &str, args: impl IntoArgs) {
        if !self.watched() {
            return;
        }
        if let Some(admin) = self.admin() {
            if let Err(err) = admin.emit(event, args) {
                tracing::debug!(target: "rsio::admin", "cannot send {event}: {err}");
            }
        }
    }

    /// Watches `ns` (once, whatever the number of calls): its sockets' connects
    /// and disconnects and its room changes.
    pub fn hook(self: &Arc<Self>, ns: &Namespace) {
        {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if names.iter().any(|n| n == ns.name()) {
                return;
            }
            names.push(ns.name().to_string());
        }
        let hub = self.clone();
        ns.on_connection(move |socket: Socket| {
            hub.connected(&socket);
            async {}
        });
        let hub = self.clone();
        let nsp = ns.name().to_string();
        ns.on_room_event(move |event| match event {
            _ if !hub.watched() => {}
            RoomEvent::Join(room, id) => {
                hub.notify(
                    "room_joined",
                    &(&nsp, room, id.to_string(), super::iso_now()),
                );
            }
            RoomEvent::Leave(room, id) => {
                hub.notify("room_left", &(&nsp, room, id.to_string(), super::iso_now()));
            }
            RoomEvent::Create(_) | RoomEvent::Delete(_) => {}
        });
    }

    fn connected(self: &Arc<Self>, socket: &Socket) {
        if self.watched() {
            self.notify("socket_connected", &(serialize(socket), super::iso_now()));
            if socket.transport() == "polling" {
                tokio::spawn(watch_upgrade(self.clone(), socket.clone()));
            }
        }
        // Whether or not a page watches now: one may by the time it leaves.
        let hub = self.clone();
        socket.on_disconnect(move |socket, reason| {
            hub.notify(
                "socket_disconnected",
                &(
                    socket.ns(),
                    socket.id().to_string(),
                    reason.as_str(),
                    super::iso_now(),
                ),
            );
        });
    }

    /// Every socket of this server, serialized for the page.
    pub fn local_sockets(&self) -> Vec<Value> {
        self.namespaces()
            .iter()
            .flat_map(|ns| ns.sockets())
            .map(|s| serialize(&s))
            .collect()
    }
}

/// When (and if) a polling socket's connection moves to WebSocket.
///
/// The engine has no upgrade event to listen to; clients upgrade right after they
/// connect, so a few checks over the first seconds find it, at the cost of one
/// short-lived timer per polling connect (and only with the admin UI on).
const UPGRADE_CHECKS: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1500),
    Duration::from_secs(5),
];

/// Tells the pages (`socket_updated`) when `socket`'s connection upgrades.
async fn watch_upgrade(hub: Arc<Hub>, socket: Socket) {
    for delay in UPGRADE_CHECKS {
        tokio::time::sleep(delay).await;
        if !socket.connected() {
            return;
        }
        if socket.transport() != "polling" {
            hub.notify(
                "socket_updated",
                &(json!({
                    "id": socket.id().to_string(),
                    "nsp": socket.ns(),
                    "transport": socket.transport(),
                }),),
            );
            return;
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A socket as the page shows it (the package's `SerializedSocket`): no `auth`
/// (it holds the admin's password on the admin namespace).
pub fn serialize(socket: &Socket) -> Value {
    let mut handshake = socket.handshake().to_json();
    if let Some(h) = handshake.as_object_mut() {
        h.remove("auth");
    }
    let mut data = socket.data_value();
    if data.is_null() {
        data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        d.remove("_admin");
    }
    let sid = socket.engine_sid().to_string();
    json!({
        "id": socket.id().to_string(),
        "clientId": sid.get(..12).unwrap_or(&sid),
        "transport": socket.transport(),
        "nsp": socket.ns(),
        "data": data,
        "handshake": handshake,
        "rooms": socket.rooms(),
    })
}
