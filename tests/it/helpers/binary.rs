//! The real `fulfilld` binary as a child process, for tests that kill it.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use fulfilld::stripe::double::{StripeDouble, event_body};

use super::*;

/// A port that was free a moment ago (the child binds it by itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Binary {
    child: Child,
    address: String,
    http: reqwest::Client,
}

impl Binary {
    /// `fulfilld serve` configured only through environment variables.
    pub fn command(dir: &Path, stripe_url: &str, callback_url: &str, port: u16) -> Command {
        Self::command_with_args(dir, stripe_url, callback_url, port, &["serve"])
    }

    /// `fulfilld <args>` with the same environment as `command`.
    pub fn command_with_args(
        dir: &Path,
        stripe_url: &str,
        callback_url: &str,
        port: u16,
        args: &[&str],
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fulfilld"));
        command
            .args(args)
            .current_dir(dir)
            .env_remove("FULFILLD_CONFIG")
            .env("RUST_LOG", "warn")
            .env("FULFILLD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("FULFILLD_STORAGE__PATH", dir.join("fulfilld.redb"))
            .env("FULFILLD_STRIPE__SECRET_KEY", SECRET_KEY)
            .env("FULFILLD_STRIPE__WEBHOOK_SECRETS", WEBHOOK_SECRET)
            .env("FULFILLD_STRIPE__API_BASE", stripe_url)
            .env("FULFILLD_ADMIN__USERNAME", "admin")
            .env("FULFILLD_ADMIN__PASSWORD", "a long test password")
            .env("FULFILLD_ADMIN__API_TOKEN", API_TOKEN)
            .env("FULFILLD_FULFILLMENT__CALLBACK_URL", callback_url)
            .env("FULFILLD_FULFILLMENT__CALLBACK_SECRET", CALLBACK_SECRET)
            .env("FULFILLD_JOBS__RETRY_BASE_MS", "20")
            .env("FULFILLD_JOBS__RETRY_MAX_SECS", "1")
            .stdin(Stdio::null());
        command
    }

    /// Starts the binary and waits until it answers `/healthz`.
    pub async fn start(dir: &Path, stripe: &StripeDouble, receiver: &Receiver) -> Binary {
        Self::start_on(dir, stripe, receiver, free_port()).await
    }

    /// As `start`, on a given port.
    pub async fn start_on(
        dir: &Path,
        stripe: &StripeDouble,
        receiver: &Receiver,
        port: u16,
    ) -> Binary {
        Self::start_with(dir, stripe, receiver, port, &[]).await
    }

    /// A replica on the PostgreSQL database at `url`, with more settings.
    pub async fn start_replica(
        dir: &Path,
        stripe: &StripeDouble,
        receiver: &Receiver,
        url: &str,
        env: &[(&str, &str)],
    ) -> Binary {
        let mut all = vec![("FULFILLD_STORAGE__URL", url)];
        all.extend_from_slice(env);
        Self::start_with(dir, stripe, receiver, free_port(), &all).await
    }

    /// As `start_on`, with more environment variables.
    pub async fn start_with(
        dir: &Path,
        stripe: &StripeDouble,
        receiver: &Receiver,
        port: u16,
        env: &[(&str, &str)],
    ) -> Binary {
        let mut command = Self::command(dir, stripe.url(), &receiver.url, port);
        command.envs(env.iter().copied());
        let child = command.spawn().expect("the fulfilld binary starts");
        let bin = Binary {
            child,
            address: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        eventually("the binary answers /healthz", || async {
            let r = bin
                .http
                .get(format!("{}/healthz", bin.address))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        bin
    }

    pub async fn send(&self, event_id: &str, kind: &str, session: &serde_json::Value) -> u16 {
        let (body, header) = signed(&event_body(event_id, kind, session));
        self.http
            .post(format!("{}/webhook", self.address))
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn session(&self, id: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}/admin/api/sessions/{id}", self.address))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or_default()
    }

    pub async fn wait_for_state(&self, id: &str, state: &str) -> serde_json::Value {
        eventually(&format!("{id} reaches {state}"), || async {
            let s = self.session(id).await;
            (s["state"] == state).then_some(s)
        })
        .await
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The process id, e.g. to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM: a graceful stop. Returns once the process has exited, with
    /// its exit status (failing the test if it takes longer than `PATIENCE`).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        eventually("the binary exits after SIGTERM", || {
            let exited = self.child.try_wait().unwrap();
            async move { exited }
        })
        .await
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
