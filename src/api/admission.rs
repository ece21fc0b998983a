//! What the server lets in. The HTTP side faces the internet (PagerDuty
//! calls it), so nobody there may hold the server by being slow: a request
//! head must arrive within `header_timeout` (idle keep-alive connections
//! included), its body within `body_timeout`, and each port has a cap on
//! open connections. A reserve of file descriptors stays for what must go on
//! working under attack: the store, the providers, takeover and the router.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors never handed to connections.
pub const FD_RESERVE: u64 = 256;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 512;
pub const DEFAULT_MAX_GRPC_CONNECTIONS: usize = 4096;

/// The limits both ports serve under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub http_connections: usize,
    pub grpc_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

/// What `[server]` in the config asks for; unset is the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub max_http_connections: Option<usize>,
    pub max_grpc_connections: Option<usize>,
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
}

impl Admission {
    /// Raises this process's open-file limit as far as it may go, then
    /// fits `settings` in it.
    pub fn for_this_process(settings: Settings) -> Admission {
        let a = Admission::within(raise_open_file_limit(), settings);
        tracing::debug!(?a, "connection limits");
        a
    }

    /// The configured caps, lowered to fit `open_files` (the soft limit on
    /// open descriptors) less the reserve: the HTTP port gets at most a
    /// quarter of what is left, gRPC a half.
    pub fn within(open_files: u64, s: Settings) -> Admission {
        let spare = open_files.saturating_sub(FD_RESERVE).max(64) as usize;
        Admission {
            http_connections: s.max_http_connections.unwrap_or(DEFAULT_MAX_HTTP_CONNECTIONS).min(spare / 4).max(1),
            grpc_connections: s.max_grpc_connections.unwrap_or(DEFAULT_MAX_GRPC_CONNECTIONS).min(spare / 2).max(1),
            header_timeout: s.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT),
            body_timeout: s.body_timeout.unwrap_or(DEFAULT_BODY_TIMEOUT),
        }
    }
}

/// Raises this process's soft limit on open files to the hard limit (as Go
/// programs do at start) and returns the soft limit in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Accept errors that mean "no descriptor now" (or an aborted handshake)
/// pass with a short pause instead of spinning or ending the server.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown`, under `limits`.
/// At the connection cap the server stops accepting (callers wait in the
/// kernel's backlog) until a connection ends.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: Admission,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = app.layer(axum::middleware::from_fn_with_state(limits.body_timeout, body_within));
    let permits = Arc::new(Semaphore::new(limits.http_connections));
    let connections = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p?,
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            s = accept(&listener) => s,
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
            drop(permit);
        });
    }
    // Requests in flight (a webhook starting a run) finish, for a while.
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        tracing::info!("HTTP connections still open after {}s are closed", SHUTDOWN_GRACE.as_secs());
    }
    Ok(())
}

/// How long a stopping server waits for HTTP requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest body any HTTP route reads.
const MAX_BODY: usize = super::webhooks::MAX_BODY;

/// Reads the whole request body before the handler runs, within `deadline`:
/// 408 when it is not all there in time, 413 when it is too large.
async fn body_within(
    axum::extract::State(deadline): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY} bytes\n")).into_response()
        }
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(axum::http::header::CONNECTION, "close")],
            format!("the request body did not arrive within {}\n", humantime::format_duration(deadline)),
        )
            .into_response(),
    }
}

/// The gRPC port's connections, each holding a place under the cap. A
/// connection that has not sent the start of a conversation (the HTTP/2
/// preface, or a TLS ClientHello) within `first_bytes` is closed: an idle
/// client cannot keep a place.
pub fn admitted(
    listener: TcpListener,
    permits: Arc<Semaphore>,
    first_bytes: Duration,
) -> impl tokio_stream::Stream<Item = io::Result<Admitted>> {
    futures::stream::unfold((listener, permits), move |(listener, permits)| async move {
        let permit = permits.clone().acquire_owned().await.ok()?;
        let stream = accept(&listener).await;
        let deadline = Some(Box::pin(tokio::time::sleep(first_bytes)));
        Some((Ok(Admitted { stream, _permit: permit, deadline, received: 0 }), (listener, permits)))
    })
}

/// Bytes a client sends first: the HTTP/2 preface is 24 (a TLS ClientHello more).
const FIRST_BYTES: usize = 24;

/// An accepted connection and its place under the cap, freed when it closes.
pub struct Admitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Until the client has sent `FIRST_BYTES`.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    received: usize,
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            self.received += buf.filled().len() - before;
            if self.received >= FIRST_BYTES {
                self.deadline = None;
            }
        }
        if polled.is_pending()
            && let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client sent no request in time")));
        }
        polled
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_open_file_limit_less_the_reserve() {
        let a = Admission::within(1024, Settings::default());
        assert_eq!((a.http_connections, a.grpc_connections), (192, 384));
        assert!(a.http_connections + a.grpc_connections + FD_RESERVE as usize <= 1024);
        let a = Admission::within(1 << 20, Settings::default());
        assert_eq!((a.http_connections, a.grpc_connections), (512, 4096));
        let s = Settings {
            max_http_connections: Some(20),
            max_grpc_connections: Some(30),
            header_timeout: Some(Duration::from_secs(3)),
            body_timeout: None,
        };
        let a = Admission::within(1 << 20, s);
        assert_eq!((a.http_connections, a.grpc_connections, a.header_timeout), (20, 30, Duration::from_secs(3)));
        assert_eq!(a.body_timeout, DEFAULT_BODY_TIMEOUT);
        // A tiny limit still leaves one connection each.
        let a = Admission::within(100, Settings::default());
        assert!(a.http_connections >= 1 && a.grpc_connections >= 1);
    }
}
