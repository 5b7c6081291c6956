//! The merchant's callback endpoint: a real HTTP server on loopback that
//! verifies the Standard Webhooks signature with its own implementation (not
//! fulfilld's), records every request, and can be told to fail or hang.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use poem::{
    EndpointExt, Request, Response, Route, Server, handler, http::StatusCode,
    listener::TcpAcceptor, post, web::Data,
};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

/// A Standard Webhooks secret for tests: `whsec_` + base64("fulfilld-test-callback-key-32byt").
pub const CALLBACK_SECRET: &str = "whsec_ZnVsZmlsbGQtdGVzdC1jYWxsYmFjay1rZXktMzJieXQ=";

#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub signature_valid: bool,
    pub body: Value,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    /// Status to answer with; 0 means hang until released.
    status: AtomicU16,
    release: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/fulfilled", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            status: AtomicU16::new(200),
            release: Notify::new(),
        });
        let app = Route::new()
            .at("/fulfilled", post(receive))
            .data(shared.clone());
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Receiver { url, shared }
    }

    /// Answer every following request with `status`.
    pub fn respond_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Hold every following request open until `release`.
    pub fn hang(&self) {
        self.shared.status.store(0, Ordering::SeqCst);
    }

    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }
}

/// Standard Webhooks verification, written from the specification.
fn verify(req: &Request, body: &[u8]) -> bool {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, ts, sigs) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let Ok(ts_num) = ts.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - ts_num).abs() > 300 {
        return false;
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(CALLBACK_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sigs.split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

#[handler]
async fn receive(req: &Request, body: poem::Body, shared: Data<&Arc<Shared>>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let signature_valid = verify(req, &bytes);
    let webhook_id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared.received.lock().unwrap().push(Received {
        webhook_id,
        signature_valid,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    let status = shared.status.load(Ordering::SeqCst);
    if status == 0 {
        let _ = tokio::time::timeout(Duration::from_secs(120), shared.release.notified()).await;
        return Response::builder().status(StatusCode::OK).finish();
    }
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .finish()
}
