//! A TCP proxy between the server and PostgreSQL with the faults a real network has: it can
//! pass traffic, add latency, refuse new connections, cut every open connection, or
//! blackhole (accept and never answer; open connections go silent).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;

struct State {
    mode: AtomicU8,
    latency_us: AtomicU64,
    /// Bumped on every cut; each relay ends when it changes.
    generation: watch::Sender<u64>,
}

impl State {
    fn mode(&self) -> u8 {
        self.mode.load(Ordering::SeqCst)
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: AtomicU8::new(PASS),
            latency_us: AtomicU64::new(0),
            generation: watch::channel(0u64).0,
        });
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let mut cut = state.generation.subscribe();
                    match state.mode() {
                        REFUSE => drop(client),
                        BLACKHOLE => {
                            // Hold the socket, answer nothing, until cut or the peer leaves.
                            tokio::spawn(async move {
                                let mut client = client;
                                let mut sink = [0u8; 1024];
                                tokio::select! {
                                    _ = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} } => {}
                                    _ = cut.changed() => {}
                                }
                            });
                        }
                        _ => {
                            let state = state.clone();
                            tokio::spawn(async move {
                                let Ok(server) = TcpStream::connect(upstream).await else {
                                    return;
                                };
                                let _ = server.set_nodelay(true);
                                let (cr, cw) = client.into_split();
                                let (sr, sw) = server.into_split();
                                tokio::select! {
                                    _ = pump(cr, sw, state.clone()) => {}
                                    _ = pump(sr, cw, state.clone()) => {}
                                    _ = cut.changed() => {}
                                }
                            });
                        }
                    }
                }
            })
        };
        Proxy { addr, state, task }
    }

    /// Cuts every open connection and refuses new ones: the database went away.
    pub fn down(&self) {
        self.state.mode.store(REFUSE, Ordering::SeqCst);
        self.cut();
    }

    /// Passes traffic again.
    pub fn up(&self) {
        self.state.mode.store(PASS, Ordering::SeqCst);
    }

    /// Drops every open connection; new ones are accepted as before.
    pub fn cut(&self) {
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Packets vanish: open connections go silent, new ones are accepted and never answered.
    pub fn blackhole(&self) {
        self.state.mode.store(BLACKHOLE, Ordering::SeqCst);
    }

    /// Delays every chunk of data, each way.
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while state.mode() == BLACKHOLE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let latency = state.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
