//! The connection layer: accepts TCP connections and serves the poem
//! endpoint on each with hyper's HTTP/1 server (CONTRACT.md "Internet-facing
//! limits").
//!
//! Why not `poem::Server`: poem 3.1 builds hyper's connection builder inside
//! `serve_connection` and sets no timer, so hyper's `header_read_timeout`
//! cannot be turned on, and it has no connection limit. Its idle timeout
//! closes a connection *gracefully*, which waits for the half-received
//! request forever: a client that sends half a request line is never cut
//! off. Here hyper's own knobs do the work:
//! - `header_read_timeout` ([`HEADER_DEADLINE`]): the request line and headers
//!   must arrive within 10 s of hyper starting to read them, however slowly
//!   they trickle; the same clock closes a keep-alive connection idle that long;
//! - `max_buf_size` ([`READ_BUFFER`]): what one connection buffers, headers included;
//! - at most `server.max_connections` connections: a connection beyond it is
//!   closed as soon as it is accepted (the accept queue never grows without
//!   bound, and the ones being served keep their file descriptors).
//!
//! HTTP/2 over cleartext (prior knowledge) is not offered: hyper-util's
//! protocol sniffing has no deadline, and HTTPS reaches fulfilld through a
//! proxy that speaks HTTP/1.1 to it.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::{
    Addr, Endpoint, Response,
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

/// Request line and headers must arrive within this long.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// hyper's read buffer per connection, and so the largest request head:
/// 64 KiB (hyper's default is ~400 KiB). With the default 1,024 connections,
/// buffers hold at most 64 MiB.
pub const READ_BUFFER: usize = 64 * 1024;

/// After an accept error (e.g. out of file descriptors), wait this long
/// before accepting again, rather than spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Refused connections and accept errors are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct ServeOptions {
    pub max_connections: usize,
    /// After `stop`, in-flight requests get this long; then connections are dropped.
    pub grace: Duration,
}

/// Serves `endpoint` on `listener` until `stop` is cancelled, then lets
/// in-flight requests finish (up to `options.grace`).
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    options: ServeOptions,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = listener.local_addr()?;
    let max = options.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    // Cancelled at `stop`: connections finish their request and close.
    let graceful = CancellationToken::new();
    // Cancelled when the grace period is over: connections are dropped.
    let abort = CancellationToken::new();
    let mut refused: u64 = 0;
    let mut last_log: Option<tokio::time::Instant> = None;
    let mut should_log = move || {
        let now = tokio::time::Instant::now();
        let due = last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        if due {
            last_log = Some(now);
        }
        due
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                if should_log() {
                    tracing::warn!(error = %e, "cannot accept a connection");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: never queued, never read.
            drop(stream);
            refused += 1;
            if should_log() {
                tracing::warn!(
                    max_connections = max,
                    refused_so_far = refused,
                    "connection refused: server.max_connections reached"
                );
            }
            continue;
        };
        // Responses are small and written whole: send them without delay.
        let _ = stream.set_nodelay(true);
        let endpoint = endpoint.clone();
        let (graceful, abort) = (graceful.clone(), abort.clone());
        tokio::spawn(async move {
            serve_connection(stream, local, remote, endpoint, graceful, abort).await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.cancel();
    // Every slot back means every connection has ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!("grace period over: closing the remaining connections");
        abort.cancel();
    }
    Ok(())
}

async fn serve_connection<E: Endpoint + 'static>(
    stream: tokio::net::TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: Arc<E>,
    graceful: CancellationToken,
    abort: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: poem::http::Request<Incoming>| {
        let endpoint = endpoint.clone();
        async move {
            let req: poem::Request = (
                req,
                LocalAddr(Addr::SocketAddr(local)),
                RemoteAddr(Addr::SocketAddr(remote)),
                Scheme::HTTP,
            )
                .into();
            let response: Response = endpoint.get_response(req).await;
            Ok::<_, Infallible>(poem::http::Response::from(response))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .max_buf_size(READ_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, remote = %remote, "connection ended");
            }
            return;
        }
        _ = graceful.cancelled() => {}
    }
    // Stopping: finish the request in flight (if any), then close.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = abort.cancelled() => {}
    }
}
