//! Accepting and serving connections (plain HTTP and HTTPS): what one
//! client may hold open, and for how long.
//!
//! Each connection is served by hyper's HTTP/1 connection builder in a task
//! of its own, with these bounds (all in [`ServerConfig`]):
//!
//! - **Connections**: at most `max_connections` at once, counted from the
//!   TCP accept (TLS handshakes included). Beyond it a new connection is
//!   accepted and closed at once, so the listen backlog keeps draining and
//!   the process never reaches its file-descriptor limit; a client retries
//!   when a slot frees.
//! - **TLS handshake**: `tls_handshake_timeout` from the accept.
//! - **Request head**: a request's line and headers must arrive in full
//!   within `header_read_timeout`, counted on a new connection from the
//!   moment it is ready (accepted, or past its handshake) and on a kept-alive
//!   one from the first byte of the next request: a client that trickles its
//!   head (slowloris) is disconnected.
//! - **Idle**: a kept-alive connection with no request in flight and no
//!   bytes moving for `idle_timeout` is closed, as is one whose peer stops
//!   reading an answer for as long.
//! - **Request**: the handling of one request, the reading of its body
//!   included, has `request_timeout`; past it the client gets a JSON error
//!   (503, `{"errors":[...]}`) and the connection is closed. The handler
//!   itself is not cancelled halfway (it may hold a store transaction or be
//!   about to write its audit entry): it runs on in its own task, keeps its
//!   connection slot, and records what it did.
//!
//! Every request carries the peer's address as an
//! [`axum::extract::ConnectInfo<SocketAddr>`] extension.
//!
//! Shutdown: when the `shutdown` future completes, the listener is closed,
//! every connection finishes the request in flight and closes, and once all
//! are gone (and every detached handler has finished) the audit log's last
//! anchor is written.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::{tls, ApiError, AppState, ServerConfig};
use lockbox_engine::Engine;

/// Serve on `listener` until `shutdown` completes.
///
/// # Errors
/// None today once the listener is bound (accept errors are retried); the
/// `Result` is kept for the callers.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Limits::of(&cfg);
    let st = AppState::new(engine, cfg);
    let app = crate::app(st.clone());
    let res = run(listener, app, limits, None, shutdown).await;
    finish_audit(st).await;
    res
}

/// Serve HTTPS on `listener` until `shutdown` completes (see [`tls`]).
///
/// # Errors
/// The certificate or key cannot be loaded.
pub async fn serve_tls(
    listener: TcpListener,
    engine: Engine,
    mut cfg: ServerConfig,
    tls_cfg: tls::TlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let loaded = tls::load(&tls_cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    cfg.tls = true;
    let limits = Limits::of(&cfg);
    let st = AppState::new(engine, cfg);
    let current = Arc::new(std::sync::RwLock::new(loaded.acceptor));
    let (metrics, events) = (st.metrics.clone(), st.events.clone());
    metrics.cert_not_after.store(
        loaded.not_after.unwrap_or(0),
        std::sync::atomic::Ordering::Relaxed,
    );
    {
        let metrics = metrics.clone();
        tls::spawn_reloader(tls_cfg, current.clone(), move |na| {
            metrics
                .cert_not_after
                .store(na.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        });
    }
    // CERTIFICATE_EXPIRING: checked every minute, emitted at most twice a day.
    tokio::spawn(async move {
        let mut last: Option<std::time::Instant> = None;
        loop {
            let na = metrics
                .cert_not_after
                .load(std::sync::atomic::Ordering::Relaxed);
            let left = na - lockbox_engine::now();
            let due = last.map_or(true, |t| {
                t.elapsed() >= std::time::Duration::from_secs(12 * 3600)
            });
            if na != 0 && left < 30 * 86_400 && due {
                last = Some(std::time::Instant::now());
                events
                    .emit(
                        "CERTIFICATE_EXPIRING",
                        json!({"not_after": na, "seconds_left": left, "days_left": left / 86_400}),
                    )
                    .await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    });
    let app = crate::app(st.clone());
    let res = run(listener, app, limits, Some(current), shutdown).await;
    finish_audit(st).await;
    res
}

/// Writes the audit entries still waiting and leaves the anchor.
async fn finish_audit(st: AppState) {
    let core = st.audit.as_ref().map(|a| a.core.clone());
    drop(st);
    if let Some(c) = core {
        c.final_anchor().await;
    }
}

/// The connection limits of [`ServerConfig`], as the accept loop uses them.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read: Duration,
    idle: Duration,
    request: Duration,
    handshake: Duration,
    max_connections: u32,
    per_address: u32,
}

impl Limits {
    fn of(cfg: &ServerConfig) -> Limits {
        // A zero timeout would refuse everything: a tenth of a second is the floor.
        let floor = |d: Duration| d.max(Duration::from_millis(100));
        let max = cfg
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Limits {
            header_read: floor(cfg.header_read_timeout),
            idle: floor(cfg.idle_timeout),
            request: floor(cfg.request_timeout),
            handshake: floor(cfg.tls_handshake_timeout),
            max_connections: u32::try_from(max).unwrap_or(u32::MAX),
            per_address: cfg.max_connections_per_address.max(1),
        }
    }
}

/// Sends the shutdown signal when dropped (also if `run` is cancelled).
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// At most one line a period about a repeated condition on stderr.
struct Throttled {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttled {
    const PERIOD: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Throttled {
            last: None,
            skipped: 0,
        }
    }

    fn say(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + Self::PERIOD) {
            self.skipped += 1;
            return;
        }
        let more = match self.skipped {
            0 => String::new(),
            n => format!(" ({n} more since the last notice)"),
        };
        eprintln!("lockbox: {}{more}", msg());
        self.last = Some(now);
        self.skipped = 0;
    }
}

/// The accept loop: one task per connection, within the limits; on
/// shutdown, waits until every connection (and detached handler) is done.
async fn run(
    listener: TcpListener,
    app: Router,
    lim: Limits,
    tls: Option<tls::Current>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(lim.max_connections as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = StopOnDrop(stop_tx);
    let mut builder = http1::Builder::new();
    // hyper's own head timer runs from the moment it waits for a request,
    // idle time included, so it cannot tell a quiet kept-alive connection
    // from a slow head; at idle + header it is only a backstop for the
    // finer watch of `Watched`.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(lim.idle + lim.header_read);
    let conn = Arc::new(Shared {
        builder,
        app: TowerToHyperService::new(app),
        lim,
    });
    let addresses: PerAddress = Arc::default();
    let mut refused = Throttled::new();
    let mut failed = Throttled::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or memory: wait a
                // little for connections to close rather than spin.
                failed.say(|| format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(address) = AddressSlot::take(&addresses, peer.ip(), lim.per_address) else {
            drop(tcp);
            refused.say(|| {
                format!(
                    "{} has {} connections open: its new ones are closed at once; \
                     see --max-connections-per-address",
                    peer.ip(),
                    lim.per_address
                )
            });
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            refused.say(|| {
                format!(
                    "connection limit reached ({} open): new connections are closed at once; \
                     see --max-connections",
                    lim.max_connections
                )
            });
            continue;
        };
        let acceptor = match &tls {
            None => None,
            Some(c) => match c.read() {
                Ok(a) => Some(a.clone()),
                Err(_) => continue,
            },
        };
        tokio::spawn(connection(
            tcp,
            peer,
            Arc::new((permit, address)),
            acceptor,
            conn.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop);
    // Every connection task and detached handler holds a slot: all free
    // means all done.
    let _all = slots.acquire_many(lim.max_connections).await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What every connection task shares.
struct Shared {
    builder: http1::Builder,
    app: TowerToHyperService<Router>,
    lim: Limits,
}

/// What an open connection holds: one of the server's slots and one of
/// its address's (both given back when the last holder is done).
type Slot = Arc<(OwnedSemaphorePermit, AddressSlot)>;

/// Open connections per client address.
type PerAddress = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>>;

/// One connection of an address, counted while it lives.
struct AddressSlot {
    map: PerAddress,
    ip: std::net::IpAddr,
}

impl AddressSlot {
    /// Takes one of `ip`'s `cap` slots, if it has one left.
    fn take(map: &PerAddress, ip: std::net::IpAddr, cap: u32) -> Option<AddressSlot> {
        let mut m = map.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

/// One connection: the TLS handshake (if any), then HTTP.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    match acceptor {
        None => serve_io(tcp, peer, slot, &shared, stop).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(shared.lim.handshake, acceptor.accept(tcp));
            let stream = tokio::select! {
                r = handshake => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Ok(Ok(s)) = stream {
                serve_io(s, peer, slot, &shared, stop).await;
            }
        }
    }
}

/// HTTP/1 on one connection until it closes, times out, or shutdown.
async fn serve_io<I>(
    io: I,
    peer: SocketAddr,
    slot: Slot,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let lim = shared.lim;
    let clock = Arc::new(Mutex::new(Clock::new(Instant::now())));
    let io = TokioIo::new(Watched::new(io, clock.clone(), lim));
    let app = shared.app.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let fut = hyper::service::Service::call(&app, req);
        let slot = slot.clone();
        let mut handler = Box::pin(async move {
            let _slot = slot;
            fut.await
        });
        let busy = Busy::enter(&clock);
        async move {
            let _busy = busy;
            let deadline = tokio::time::sleep(lim.request);
            tokio::pin!(deadline);
            // Polled here (no task per request); past the timeout the client
            // is answered and the handler moves to a task of its own, left
            // to finish (and audit) what it started — never cut halfway.
            let resp = tokio::select! {
                biased;
                r = &mut handler => match r {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
                () = &mut deadline => {
                    tokio::spawn(handler);
                    closing(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the request was not handled within {}s (the server's request timeout); \
                             it may still complete",
                            lim.request.as_secs_f64()
                        ),
                    ))
                }
            };
            Ok::<Response<Body>, Infallible>(resp)
        }
    });
    let conn = shared.builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// An error answer after which the connection is closed (the request body
/// may not have been read).
fn closing(e: ApiError) -> Response<Body> {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Where a connection stands, for its timeouts.
#[derive(Debug)]
struct Clock {
    /// Requests being handled (0 or 1 with HTTP/1).
    in_flight: usize,
    /// Since when nothing happened: the last answer, or the last bytes
    /// written.
    quiet_since: Instant,
    /// Since when the head of the next request is awaited, once it has
    /// begun (or from the start of a new connection).
    head_since: Option<Instant>,
}

impl Clock {
    fn new(now: Instant) -> Clock {
        Clock {
            in_flight: 0,
            quiet_since: now,
            head_since: Some(now),
        }
    }

    /// When the connection times out if nothing changes (None: a request
    /// is in flight, the request timeout watches it).
    fn read_deadline(&self, lim: &Limits) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match self.head_since {
            Some(t) => t + lim.header_read,
            None => self.quiet_since + lim.idle,
        })
    }
}

fn lock(c: &Mutex<Clock>) -> std::sync::MutexGuard<'_, Clock> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request in flight on a connection, until its answer is ready.
struct Busy(Arc<Mutex<Clock>>);

impl Busy {
    fn enter(clock: &Arc<Mutex<Clock>>) -> Busy {
        let mut c = lock(clock);
        c.in_flight += 1;
        c.head_since = None;
        Busy(clock.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut c = lock(&self.0);
        c.in_flight = c.in_flight.saturating_sub(1);
        c.quiet_since = Instant::now();
    }
}

/// The connection's stream, failing reads and writes with `TimedOut` when
/// the [`Clock`] says the peer has had its time.
struct Watched<I> {
    io: I,
    clock: Arc<Mutex<Clock>>,
    lim: Limits,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled_since: Option<Instant>,
}

impl<I> Watched<I> {
    fn new(io: I, clock: Arc<Mutex<Clock>>, lim: Limits) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        Watched {
            io,
            clock,
            lim,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_stalled_since: None,
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("client {what} timed out"))
    }

    /// A read is pending: has the peer run out of time?
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(deadline) = lock(&self.clock).read_deadline(&self.lim) else {
            return Poll::Pending;
        };
        // The deadline moves later with every request; moving the timer
        // each time costs a timer-wheel update per request. It is moved
        // earlier at once, and later only once it fires too soon.
        if deadline < self.read_timer.deadline() {
            self.read_timer.as_mut().reset(deadline);
        }
        loop {
            match self.read_timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= deadline => {
                    return Poll::Ready(Err(Self::timed_out("read")))
                }
                Poll::Ready(()) => self.read_timer.as_mut().reset(deadline),
            }
        }
    }

    /// A write is pending: has the peer stopped reading for too long?
    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let since = *self.write_stalled_since.get_or_insert_with(Instant::now);
        let deadline = since + self.lim.idle;
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Self::timed_out("write")),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After a write, flush or shutdown: a pending one starts (or goes on)
    /// the stall clock; bytes written count as activity (a flush with
    /// nothing to flush does not).
    fn wrote<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.poll_write_deadline(cx).map(Err),
            Poll::Ready(r) => {
                self.write_stalled_since = None;
                if r.as_ref().is_ok_and(progressed) {
                    lock(&self.clock).quiet_since = Instant::now();
                }
                Poll::Ready(r)
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut c = lock(&this.clock);
                    if c.in_flight == 0 && c.head_since.is_none() {
                        c.head_since = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_read_deadline(cx),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(r, |n| *n > 0, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(r, |n| *n > 0, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(r, |()| false, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.wrote(r, |()| false, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(75),
            request: Duration::from_secs(90),
            handshake: Duration::from_secs(10),
            max_connections: 4,
            per_address: 4,
        }
    }

    #[tokio::test]
    async fn clock_deadlines() {
        let t0 = Instant::now();
        let clock = Arc::new(Mutex::new(Clock::new(t0)));
        let l = lim();
        // A new connection: the first head within header_read.
        assert_eq!(lock(&clock).read_deadline(&l), Some(t0 + l.header_read));
        // A request in flight: no read deadline.
        let busy = Busy::enter(&clock);
        assert_eq!(lock(&clock).read_deadline(&l), None);
        drop(busy);
        // Answered: idle from then on.
        let c = lock(&clock);
        assert!(c.head_since.is_none());
        assert_eq!(c.read_deadline(&l), Some(c.quiet_since + l.idle));
    }

    #[test]
    fn limits_have_floors() {
        let cfg = ServerConfig {
            header_read_timeout: Duration::ZERO,
            max_connections: 0,
            ..ServerConfig::default()
        };
        let l = Limits::of(&cfg);
        assert!(l.header_read >= Duration::from_millis(100));
        assert_eq!(l.max_connections, 1);
    }
}
