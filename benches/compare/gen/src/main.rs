//! Load generator for benches/compare.sh and benches/replicas.sh: signed,
//! unique Stripe webhooks to URLs on 127.0.0.1, closed loop (N connections) or
//! open loop (fixed rate, latency from each request's scheduled start). Prints
//! one line of `key=value` pairs. Bounded in count and in time.
//!
//! URL may be several, comma-separated (one per replica): closed-loop
//! connection i goes to URL i mod n, open-loop request k to URL k mod n, so
//! the load is spread evenly, as a round-robin proxy would.
//!
//!   compare-gen URL TEMPLATE SECRET closed CONNS SECS [COUNT] [START]
//!   compare-gen URL TEMPLATE SECRET open RATE SECS [START] [MAX_CONNS]
//!
//! Open loop keeps at most MAX_CONNS (512) connections, as a webhook sender
//! would: a request that finds all of them busy waits for one, and that wait
//! is part of its latency (measured from its scheduled start).
//!
//!   compare-gen healthz PORT T0_NS        # ms from T0_NS (CLOCK_REALTIME ns) to the first 200
//!
//! TEMPLATE is a file whose every `NNNNNNNNNNNN` is replaced by the request
//! number (12 digits, from START), so each request is a new event and session.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use sha2::Sha256;
use tokio::net::TcpStream;

const SLOT: &str = "NNNNNNNNNNNN";

/// One server to send to; idle open-loop connections wait in its pool.
struct Target {
    addr: String,
    path: String,
    pool: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

struct Ctx {
    targets: Vec<Target>,
    template: String,
    secret: String,
    counter: AtomicU64,
}

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

impl Ctx {
    fn request(&self, target: &Target) -> hyper::Request<Full<Bytes>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let body = self.template.replace(SLOT, &format!("{n:012}"));
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body.as_bytes());
        let sig = hex(&mac.finalize().into_bytes());
        hyper::Request::post(target.path.as_str())
            .header("host", target.addr.as_str())
            .header("content-type", "application/json")
            .header("stripe-signature", format!("t={t},v1={sig}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    async fn connect(&self, t: &Target) -> Option<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&t.addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let io = hyper_util_io::TokioIo(stream);
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        Some(send)
    }

    /// Sends one request on `conn`; true when answered 2xx with its body read.
    async fn send(&self, t: &Target, conn: &mut SendRequest<Full<Bytes>>) -> bool {
        if conn.ready().await.is_err() {
            return false;
        }
        match conn.send_request(self.request(t)).await {
            Ok(r) => {
                let ok = r.status().is_success();
                ok && r.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn report(mode: &str, lat: &mut [u64], errors: u64, elapsed: f64, extra: &str) {
    lat.sort_unstable();
    println!(
        "mode={mode} ok={} errors={errors} secs={elapsed:.3} rps={:.0} p50={:.2} p99={:.2} p999={:.2} max={:.2}{extra}",
        lat.len(),
        lat.len() as f64 / elapsed.max(1e-9),
        pct(lat, 0.50),
        pct(lat, 0.99),
        pct(lat, 0.999),
        pct(lat, 1.0),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.first().map(String::as_str) == Some("healthz") {
        return healthz(&a[1], a[2].parse().expect("T0_NS")).await;
    }
    if a.len() < 6 {
        eprintln!("usage: compare-gen URL TEMPLATE SECRET closed CONNS SECS [COUNT] [START] | open RATE SECS [START]");
        std::process::exit(2);
    }
    let targets: Vec<Target> = a[0]
        .split(',')
        .map(|url| {
            let url = url.strip_prefix("http://").expect("http:// URL");
            let (hostport, path) = url.split_at(url.find('/').unwrap_or(url.len()));
            assert!(hostport.starts_with("127.0.0.1:"), "traffic to 127.0.0.1 only");
            Target {
                addr: hostport.to_string(),
                path: if path.is_empty() { "/".into() } else { path.into() },
                pool: Mutex::new(Vec::new()),
            }
        })
        .collect();
    let num = |i: usize, d: u64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let mode = a[3].as_str();
    let start = if mode == "closed" { num(7, 0) } else { num(6, 0) };
    let ctx = Arc::new(Ctx {
        targets,
        template: std::fs::read_to_string(&a[1]).expect("template"),
        secret: a[2].clone(),
        counter: AtomicU64::new(start),
    });
    let secs = num(5, 10).min(600);
    match mode {
        "closed" => {
            let conns = num(4, 50).clamp(1, 1000);
            let count = num(6, u64::MAX);
            let limit = start.saturating_add(count);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..conns {
                let ctx = ctx.clone();
                tasks.push(tokio::spawn(async move {
                    let t = &ctx.targets[i as usize % ctx.targets.len()];
                    let (mut lat, mut errors) = (Vec::new(), 0u64);
                    let mut conn = None;
                    while Instant::now() < deadline && ctx.counter.load(Ordering::Relaxed) < limit {
                        if conn.is_none() {
                            conn = ctx.connect(t).await;
                            if conn.is_none() {
                                errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        }
                        let s = Instant::now();
                        if ctx.send(t, conn.as_mut().unwrap()).await {
                            lat.push(s.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                            conn = None;
                        }
                    }
                    (lat, errors)
                }));
            }
            let (mut lat, mut errors) = (Vec::new(), 0);
            for t in tasks {
                let (l, e) = t.await.unwrap();
                lat.extend(l);
                errors += e;
            }
            report(mode, &mut lat, errors, t0.elapsed().as_secs_f64(), &format!(" conns={conns}"));
        }
        "open" => {
            let rate = num(4, 1000).clamp(1, 100_000);
            let max_conns = num(7, 512).clamp(1, 4096) as usize;
            let permits = Arc::new(tokio::sync::Semaphore::new(max_conns));
            let total = rate * secs;
            let t0 = Instant::now();
            let mut handles = Vec::with_capacity(total as usize);
            let mut sent = 0u64;
            let mut max_lag_us = 0u64;
            while sent < total {
                let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
                while sent < due {
                    let scheduled = t0 + Duration::from_nanos(sent * 1_000_000_000 / rate);
                    max_lag_us = max_lag_us.max(scheduled.elapsed().as_micros() as u64);
                    let (ctx, permits, sent_k) = (ctx.clone(), permits.clone(), sent);
                    handles.push(tokio::spawn(async move {
                        let _permit = permits.acquire().await.unwrap();
                        let t = &ctx.targets[(sent_k % ctx.targets.len() as u64) as usize];
                        let pooled = t.pool.lock().unwrap().pop();
                        let mut conn = match pooled {
                            Some(c) => Some(c),
                            None => ctx.connect(t).await,
                        };
                        let ok = match conn.as_mut() {
                            Some(c) => ctx.send(t, c).await,
                            None => false,
                        };
                        if ok {
                            t.pool.lock().unwrap().push(conn.unwrap());
                        }
                        (ok, scheduled.elapsed().as_micros() as u64)
                    }));
                    sent += 1;
                }
                let next = t0 + Duration::from_nanos(sent * 1_000_000_000 / rate);
                tokio::time::sleep_until(next.into()).await;
            }
            let (mut lat, mut errors) = (Vec::new(), 0);
            for h in handles {
                let (ok, l) = h.await.unwrap();
                if ok {
                    lat.push(l);
                } else {
                    errors += 1;
                }
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let conns: usize = ctx.targets.iter().map(|t| t.pool.lock().unwrap().len()).sum();
            report(
                mode,
                &mut lat,
                errors,
                elapsed,
                &format!(" rate={rate} sent={total} conns={conns} max_conns={max_conns} gen_lag_ms={:.2}", max_lag_us as f64 / 1000.0),
            );
        }
        _ => panic!("mode is closed or open"),
    }
}

/// Polls `GET /healthz` on 127.0.0.1:PORT every millisecond, for at most 60 s,
/// and prints the milliseconds from `t0_ns` to the first `200`.
async fn healthz(port: &str, t0_ns: u128) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{port}");
    let begun = Instant::now();
    while begun.elapsed() < Duration::from_secs(60) {
        if let Ok(mut s) = TcpStream::connect(&addr).await {
            let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 16];
            if s.write_all(req.as_bytes()).await.is_ok()
                && matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
            {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
                println!("{:.1}", now.saturating_sub(t0_ns) as f64 / 1e6);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("timeout");
    std::process::exit(1);
}

/// hyper's IO traits over a tokio stream (the few lines of hyper-util's
/// `TokioIo` that a client needs).
mod hyper_util_io {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    pub struct TokioIo(pub tokio::net::TcpStream);

    impl hyper::rt::Read for TokioIo {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            mut buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = unsafe {
                let mut tbuf = tokio::io::ReadBuf::uninit(buf.as_mut());
                match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().0), cx, &mut tbuf) {
                    Poll::Ready(Ok(())) => tbuf.filled().len(),
                    other => return other,
                }
            };
            unsafe { buf.advance(n) };
            Poll::Ready(Ok(()))
        }
    }

    impl hyper::rt::Write for TokioIo {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().0), cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
        }
    }
}
