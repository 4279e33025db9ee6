//! A small HTTP/1.1 server for `/metrics`, on its own thread with a single-threaded tokio
//! runtime, so that callers (the pipeline, the TUI) need not be async.
//!
//! It answers `GET /metrics` and `GET /`, one request per connection, with bounded request
//! size, time and concurrency: it faces a scraper, not the internet.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};

use super::{index_page, Metrics, CONTENT_TYPE};

/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection may take.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CONNS: usize = 32;

/// Parses `--metrics ADDR`: `HOST:PORT`, `[V6]:PORT`, or just a port (`9464` or `:9464`),
/// which binds 127.0.0.1. A host name is resolved and its first address taken.
pub fn parse_addr(s: &str) -> io::Result<SocketAddr> {
    let s = s.trim();
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad metrics address {s:?}: expected HOST:PORT, :PORT or PORT"),
        )
    };
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(bad());
    }
    s.to_socket_addrs()
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("metrics address {s:?}: {e}"),
            )
        })?
        .next()
        .ok_or_else(bad)
}

/// A running metrics server. Dropping it stops the server.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, and waits for the server thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Serves `metrics` at `http://ADDR/metrics` (see [`parse_addr`]). Binding happens before
/// this returns, so an address in use is an error here, not later.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> io::Result<Server> {
    let want = parse_addr(addr)?;
    let listener = std::net::TcpListener::bind(want).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {want} for metrics: {e}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("aptrace-metrics".into())
        .spawn(move || rt.block_on(accept_loop(listener, metrics, rx)))?;
    Ok(Server {
        addr: local,
        stop: Some(tx),
        thread: Some(thread),
    })
}

async fn accept_loop(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics server: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                log::debug!("metrics server: accept: {e}");
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CONN_TIMEOUT, handle(stream, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("metrics server: {peer}: {e}"),
                Err(_) => log::debug!("metrics server: {peer}: timed out"),
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                false,
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("");
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            respond(
                &mut stream,
                "200 OK",
                CONTENT_TYPE,
                &metrics.encode(),
                head_only,
            )
            .await
        }
        ("GET" | "HEAD", "/") => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain; charset=utf-8",
                &index_page(),
                head_only,
            )
            .await
        }
        (_, "/metrics" | "/") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
                false,
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "not found; try /metrics\n",
                false,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}
