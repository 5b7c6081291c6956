//! Internet-facing limits (CONTRACT.md "Internet-facing limits"), black-box
//! over raw TCP: slow clients, too many connections, big and stalled bodies.
//! Memory is read from the real binary's /proc entry, as the in-process app
//! shares its process with every other test.

use std::time::{Duration, Instant};

use fulfilld::stripe::double::StripeDouble;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{binary::Binary, *};

fn host(address: &str) -> &str {
    address.trim_start_matches("http://")
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent.
async fn read_to_close(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response head (up to the blank line) and returns its status.
async fn read_status(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ').nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_slow_loris_is_cut_off_at_the_header_deadline() {
    let app = spawn_app().await;
    let stream = TcpStream::connect(host(&app.address)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let start = Instant::now();
    write
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let closed = tokio::spawn(async move { read_to_close(&mut read).await });
    // One byte every 2 s, as a slow-loris client does, until the server hangs up.
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let mut bytes_sent = 0;
    while !closed.is_finished() && start.elapsed() < Duration::from_secs(20) {
        tick.tick().await;
        if write.write_all(b"a").await.is_err() {
            break;
        }
        bytes_sent += 1;
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the server closed the connection")
        .unwrap();
    let elapsed = start.elapsed();
    // The deadline is 10 s; at most one 2 s tick passes before the test sees it.
    assert!(
        elapsed < Duration::from_secs(13),
        "cut off after {elapsed:?} ({bytes_sent} bytes trickled)"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the request was never served"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_healthz_keeps_answering() {
    const MAX: usize = 64;
    let app = spawn_app_with(|c| c.server.max_connections = MAX).await;
    let addr = host(&app.address).to_string();
    // A client that was connected before the flood.
    let mut own = TcpStream::connect(&addr).await.unwrap();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    own.write_all(healthz).await.unwrap();
    assert_eq!(read_status(&mut own).await, Some(200));
    let mut body = [0u8; 2];
    own.read_exact(&mut body).await.unwrap();

    // MAX + 50 half-open requests.
    let mut held = Vec::new();
    for _ in 0..MAX + 50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTT").await;
        held.push(s);
    }
    // The 50 beyond the cap (51: the own connection holds a slot) are closed at once.
    let closed = |held: &Vec<TcpStream>| {
        held.iter()
            .filter(|s| {
                let mut b = [0u8; 1];
                match s.try_read(&mut b) {
                    Ok(0) => true,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    Ok(_) => false,
                }
            })
            .count()
    };
    eventually("the connections beyond the cap are closed", || {
        let n = closed(&held);
        async move { (n >= 50).then_some(()) }
    })
    .await;
    let refused = closed(&held);
    assert!(
        (50..=51).contains(&refused),
        "{refused} of {} refused",
        MAX + 50
    );
    // The server keeps serving the connections it holds...
    let start = Instant::now();
    own.write_all(healthz).await.unwrap();
    assert_eq!(read_status(&mut own).await, Some(200));
    assert!(start.elapsed() < Duration::from_secs(2));
    // ...and frees the half-open slots at the header deadline, so new
    // clients get in again while the sockets are still open on our side.
    eventually("/healthz answers on a new connection", || async {
        let r = reqwest::get(app.url("/healthz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn an_oversize_content_length_gets_413_before_the_body_is_sent() {
    let app = spawn_app().await;
    for (path, declared) in [
        ("/webhook", 1024 * 1024 + 1),
        ("/admin/login", 64 * 1024 + 1),
        ("/admin/api/sessions/cs_x/fulfill", 10 * 1024 * 1024),
    ] {
        let mut s = TcpStream::connect(host(&app.address)).await.unwrap();
        let start = Instant::now();
        s.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        // Not one byte of the body is sent: the answer must not wait for it.
        let status = tokio::time::timeout(Duration::from_secs(5), read_status(&mut s))
            .await
            .expect("answered without the body");
        assert_eq!(status, Some(413), "{path}");
        assert!(start.elapsed() < Duration::from_secs(2), "{path}");
    }
    // Within the limits the routes work as before.
    let r = app
        .http
        .post(app.url("/admin/login"))
        .form(&[("username", "admin"), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 413);
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit() {
    let app = spawn_app().await;
    let mut s = TcpStream::connect(host(&app.address)).await.unwrap();
    s.write_all(b"POST /admin/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 8192, "a".repeat(8192));
        // 1 MiB at most; the server answers after 64 KiB.
        for _ in 0..128 {
            if write.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let status = tokio::time::timeout(Duration::from_secs(10), read_status(&mut read))
        .await
        .expect("answered");
    assert_eq!(status, Some(413));
    writer.abort();
}

/// Sends a `Content-Length` POST of `total` bytes to `path` without
/// waiting, and returns the status the server answered with (None: none).
async fn post_big(addr: String, path: &str, total: usize, chunked: bool) -> Option<u16> {
    let s = TcpStream::connect(&addr).await.ok()?;
    let (mut read, mut write) = s.into_split();
    let head = if chunked {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
    };
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await.ok()?;
        let block = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if chunked {
                write
                    .write_all(format!("{:x}\r\n", block.len()).as_bytes())
                    .await
                    .ok()?;
            }
            write.write_all(&block).await.ok()?;
            if chunked {
                write.write_all(b"\r\n").await.ok()?;
            }
            sent += block.len();
        }
        Some(())
    });
    let status = tokio::time::timeout(Duration::from_secs(30), read_status(&mut read))
        .await
        .ok()
        .flatten();
    writer.abort();
    status
}

#[tokio::test]
async fn a_256_mib_login_post_gets_413_without_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    let addr = host(bin.address()).to_string();
    let before = rss_kib(bin.pid());
    for chunked in [false, true] {
        let status = post_big(addr.clone(), "/admin/login", 256 * 1024 * 1024, chunked).await;
        assert_eq!(status, Some(413), "chunked: {chunked}");
    }
    let grown = rss_kib(bin.pid()).saturating_sub(before);
    assert!(grown < 10 * 1024, "RSS grew by {grown} KiB");
}

#[tokio::test]
async fn stalled_webhook_bodies_stay_within_the_body_budget() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    let addr = host(bin.address()).to_string();
    let before = rss_kib(bin.pid());
    // 100 bodies that declare 1 MiB, send all of it but one byte, and stall.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut holders = Vec::new();
    for _ in 0..100 {
        let (addr, busy) = (addr.clone(), busy.clone());
        holders.push(tokio::spawn(async move {
            let Ok(s) = TcpStream::connect(&addr).await else {
                return;
            };
            let (mut read, mut write) = s.into_split();
            let sent = async {
                write
                    .write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\nStripe-Signature: t=1,v1=00\r\n\r\n")
                    .await?;
                write.write_all(&vec![b'{'; 1024 * 1024 - 1]).await
            };
            let status = tokio::select! {
                _ = sent => read_status(&mut read).await,
                status = read_status(&mut read) => status,
            };
            if status == Some(503) {
                busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // Hold the socket (and its stalled body) until the test ends.
            std::future::pending::<()>().await;
        }));
    }
    // The budget (64 MiB) holds about 64 of them; the rest are answered 503 at once.
    eventually("the bodies beyond the budget are refused", || async {
        (busy.load(std::sync::atomic::Ordering::Relaxed) >= 30).then_some(())
    })
    .await;
    // Still responsive, and memory stays near the budget.
    let start = Instant::now();
    let r = reqwest::get(format!("{}/healthz", bin.address()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(start.elapsed() < Duration::from_secs(2));
    let grown = rss_kib(bin.pid()).saturating_sub(before);
    assert!(grown < 100 * 1024, "RSS grew by {grown} KiB");
    for h in holders {
        h.abort();
    }
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_at_the_body_deadline_and_the_connection_closes() {
    let app = spawn_app().await;
    // Both at once, so the test takes one deadline, not two.
    let mut both = Vec::new();
    for path in ["/admin/login", "/webhook"] {
        let addr = host(&app.address).to_string();
        both.push(tokio::spawn(async move {
            let s = TcpStream::connect(&addr).await.unwrap();
            let (mut read, mut write) = s.into_split();
            let start = Instant::now();
            write
                .write_all(
                    format!(
                        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nusername="
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
            // The rest never comes: 408 at 20 s, then the server hangs up.
            let answer = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut read))
                .await
                .expect("the server closed the connection");
            let elapsed = start.elapsed();
            let answer = String::from_utf8_lossy(&answer).to_string();
            assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
            assert!(
                elapsed >= Duration::from_secs(19) && elapsed < Duration::from_secs(25),
                "{path}: {elapsed:?}"
            );
            drop(write);
        }));
    }
    for task in both {
        task.await.unwrap();
    }
}
