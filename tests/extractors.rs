//! Handlers as extractors, in any order: what each extractor gives, and what a
//! client sees when one refuses (its ack answered with an error, the handler
//! not run). Also Node's argument rule on the wire, and rsio mounted through
//! its tower service under plain hyper.

mod inproc;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use inproc::{within, Client};
use rsio::prelude::*;
use serde::Deserialize;

#[derive(Clone)]
struct Config {
    prefix: String,
}

#[derive(Clone, Debug, PartialEq)]
struct Nick(String);

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

/// A server whose handlers each take a different mix of extractors; `ran`
/// counts the handler bodies that ran.
fn server(ran: Arc<AtomicUsize>) -> Server {
    let io = Server::builder()
        .with_state(Config {
            prefix: "> ".into(),
        })
        .with_state(7u8)
        .build();
    // `io.use(…)`: refuses with a `ConnectError`, here made from a std error.
    io.use_middleware(|s: Socket| async move {
        if s.handshake().auth()["deny"] == true {
            let err = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
            Err(ConnectError::from_error(err).with_data(serde_json::json!({"code": 403})))
        } else {
            Ok(())
        }
    });
    io.ns(
        "/",
        move |socket: Socket, State(n): State<u8>, Data(auth): Data<serde_json::Value>| {
            let ran = ran.clone();
            async move {
                if let Some(nick) = auth["nick"].as_str() {
                    socket.extensions().insert(Nick(nick.into()));
                }
                let _ = socket.emit("hello", &(n, auth));
                let r = ran.clone();
                socket.on("add", move |ack: AckSender, Data(add): Data<Add>| {
                    r.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = ack.send(&(add.a + add.b));
                    }
                });
                let r = ran.clone();
                socket.on("try", move |TryData(add): TryData<Add>, ack: AckSender| {
                    r.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = match add {
                            Ok(add) => ack.send(&add.a),
                            Err(e) => ack.send(&format!("bad: {e}")),
                        };
                    }
                });
                // Args before Data: both see the arguments.
                socket.on(
                    "both",
                    |args: Args, ack: AckSender, Data(first): Data<String>| async move {
                        let _ = ack.send(&(first, args.len()));
                    },
                );
                socket.on(
                    "state",
                    |State(c): State<Config>, Data(text): Data<String>, ack: AckSender| async move {
                        let _ = ack.send(&format!("{}{text}", c.prefix));
                    },
                );
                let r = ran.clone();
                socket.on(
                    "nick",
                    move |ack: AckSender, Extension(Nick(nick)): Extension<Nick>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let _ = ack.send(&nick);
                        }
                    },
                );
                socket.on(
                    "missing-state",
                    |_: State<String>, ack: AckSender| async move {
                        let _ = ack.send("ran");
                    },
                );
                socket.on("none", |s: Socket| async move {
                    let _ = s.emit("none", ());
                });
                socket.on("shapes", |s: Socket| async move {
                    let _ = s.emit("shapes", &vec![1, 2, 3]);
                    let _ = s.emit("shapes", &(1, "2"));
                    let _ = s.emit("shapes", &serde_json::json!([4, 5]));
                    let _ = s.emit("shapes", &(vec![6],));
                });
                socket.on("forward", |s: Socket, args: Args| async move {
                    let _ = s.emit("forward", args.nth(1));
                });
                // An async closure works as well as a closure returning a future.
                socket.on("async-closure", async |ack: AckSender| {
                    let _ = ack.send("async");
                });
            }
        },
    );
    io
}

async fn start() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let io = server(ran.clone());
    (inproc::serve(io.router()).await, ran)
}

/// A client on `/` with this auth, past its `hello`.
async fn connect(addr: std::net::SocketAddr, auth: &str) -> Client {
    let mut client = Client::open(addr, "/socket.io/").await;
    client.send(&format!("40{auth}")).await;
    let reply = client.recv().await.unwrap();
    assert!(reply.starts_with("40{\"sid\""), "CONNECT reply: {reply}");
    let hello = client.recv().await.unwrap();
    assert_eq!(
        hello,
        format!(
            r#"42["hello",7,{}]"#,
            if auth.is_empty() { "{}" } else { auth }
        )
    );
    client
}

async fn call(client: &mut Client, id: u32, event_and_args: &str) -> String {
    client.send(&format!("42{id}[{event_and_args}]")).await;
    client.recv().await.unwrap()
}

#[tokio::test]
async fn data_state_extension_and_args_in_any_order() {
    let (addr, _) = start().await;
    let mut c = connect(addr, r#"{"nick":"ann"}"#).await;
    assert_eq!(call(&mut c, 1, r#""add",{"a":2,"b":3}"#).await, "431[5]");
    assert_eq!(call(&mut c, 2, r#""try",{"a":4,"b":0}"#).await, "432[4]");
    assert_eq!(call(&mut c, 3, r#""both","x",2,3"#).await, r#"433["x",3]"#);
    assert_eq!(call(&mut c, 4, r#""state","hi""#).await, r#"434["> hi"]"#);
    assert_eq!(call(&mut c, 5, r#""nick""#).await, r#"435["ann"]"#);
    assert_eq!(
        call(&mut c, 6, r#""async-closure""#).await,
        r#"436["async"]"#
    );
    c.send(r#"42["none"]"#).await;
    assert_eq!(c.recv().await.as_deref(), Some(r#"42["none"]"#));
}

/// A payload `Data<T>` cannot read is answered on the client's ack (it was
/// dropped with a debug log, leaving the client waiting); `TryData` hands it
/// to the handler.
#[tokio::test]
async fn a_bad_payload_is_answered_on_the_ack() {
    let (addr, ran) = start().await;
    let mut c = connect(addr, "").await;
    let reply = call(&mut c, 1, r#""add","two""#).await;
    assert!(
        reply.starts_with(r#"431[{"error":"invalid arguments: "#),
        "{reply}"
    );
    let reply = call(&mut c, 2, r#""try",{"a":1}"#).await;
    assert!(reply.starts_with(r#"432["bad: "#), "{reply}");
    // No extension `Nick` on this socket: refused the same way.
    let reply = call(&mut c, 3, r#""nick""#).await;
    assert!(
        reply.starts_with(r#"433[{"error":"the socket has no extension"#),
        "{reply}"
    );
    let reply = call(&mut c, 4, r#""missing-state""#).await;
    assert!(
        reply.starts_with(r#"434[{"error":"no state of type"#),
        "{reply}"
    );
    // Only `try` ran its body.
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // The socket is still served.
    assert_eq!(call(&mut c, 5, r#""add",{"a":1,"b":1}"#).await, "435[2]");
}

/// `Server::use_middleware` guards `/`; its error reaches the client as
/// `connect_error` with its message and data.
#[tokio::test]
async fn server_middleware_refuses_with_a_connect_error() {
    fn is_std_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    is_std_error(&ConnectError::new("x"));
    let (addr, _) = start().await;
    let mut c = Client::open(addr, "/socket.io/").await;
    c.send(r#"40{"deny":true}"#).await;
    assert_eq!(
        c.recv().await.as_deref(),
        Some(r#"44{"message":"denied","data":{"code":403}}"#)
    );
}

/// `()` is no argument, a tuple one per element, anything else (a `Vec`, a
/// JSON array) one; `Args::nth` sends one received argument on, with its
/// binary attachment.
#[tokio::test]
async fn arguments_as_node_has_them() {
    let (addr, _) = start().await;
    let mut c = connect(addr, "").await;
    c.send(r#"42["shapes"]"#).await;
    for expected in [
        r#"42["shapes",[1,2,3]]"#,
        r#"42["shapes",1,"2"]"#,
        r#"42["shapes",[4,5]]"#,
        r#"42["shapes",[6]]"#,
    ] {
        assert_eq!(c.recv().await.as_deref(), Some(expected));
    }
    c.send(r#"451-["forward","a",{"_placeholder":true,"num":0}]"#)
        .await;
    c.send_binary(b"\x01\x02").await;
    assert_eq!(
        c.recv().await.as_deref(),
        Some(r#"451-["forward",{"_placeholder":true,"num":0}]"#)
    );
    assert_eq!(c.recv_binary().await, b"\x01\x02");
}

/// rsio under plain hyper, through `io.service()`, and in front of another
/// service through `io.layer()`.
#[tokio::test]
async fn mounted_with_tower_under_plain_hyper() {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
        service::TowerToHyperService,
    };

    let io = server(Arc::default());
    let fallback = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::from("app")))
    });
    let layered = tower::Layer::layer(&io.layer(), fallback);
    let mut addrs = Vec::new();
    for layer in [false, true] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let (service, layered) = (io.service(), layered.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let io = TokioIo::new(stream);
                let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
                if layer {
                    let svc = TowerToHyperService::new(layered.clone());
                    tokio::spawn(async move {
                        let _ = builder.serve_connection_with_upgrades(io, svc).await;
                    });
                } else {
                    let svc = TowerToHyperService::new(service.clone());
                    tokio::spawn(async move {
                        let _ = builder.serve_connection_with_upgrades(io, svc).await;
                    });
                }
            }
        });
    }
    for addr in &addrs {
        let mut c = connect(*addr, "").await;
        assert_eq!(call(&mut c, 1, r#""add",{"a":2,"b":3}"#).await, "431[5]");
    }
    let other = within(
        "a request beside rsio",
        inproc::http(addrs[1], "GET /app", ""),
    )
    .await;
    assert!(
        other.starts_with("HTTP/1.1 200") && other.ends_with("app"),
        "{other}"
    );
    let none = within(
        "a request the service alone does not serve",
        inproc::http(addrs[0], "GET /app", ""),
    )
    .await;
    assert!(none.starts_with("HTTP/1.1 404"), "{none}");
}
