//! The database file: a corrupted one is refused at startup with a clear
//! message rather than trusted.

use std::process::Stdio;

use fulfilld::{
    domain::{Input, Reply, Session},
    model::{EventRecord, Job, Notification, SessionId, SessionRecord, State},
    store::{
        BackupStats, Ctx, Delivered, Ingested, ListQuery, NewEvent, Page, QueueStats,
        Result as StoreResult, SessionView, Storage, StoreError,
    },
    stripe::double::{SampleSession, StripeDouble},
};

use crate::helpers::{
    binary::{Binary, free_port},
    *,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_database_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    for i in 0..200 {
        let id = format!("cs_test_corrupt_{i:04}");
        let mut sample = SampleSession::paid(&id, 1);
        sample.payment_status = "unpaid";
        let (session, _) = sample.build();
        assert_eq!(
            bin.send(
                &format!("evt_corrupt_{i}"),
                "checkout.session.completed",
                &session
            )
            .await,
            200
        );
    }
    bin.kill_9();

    // Flip bytes in the middle of the file, as a failing disk would.
    let path = dir.path().join("fulfilld.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for at in [len / 3, len / 2, 2 * len / 3] {
        for b in &mut bytes[at..at + 64] {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&path, &bytes).unwrap();

    let output = Binary::command(dir.path(), stripe.url(), &receiver.url, free_port())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a corrupted database must not be served"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the database at"), "{stderr}");
    assert!(stderr.contains("fulfilld.redb"), "{stderr}");
}

/// A real store whose writes fail as a full disk's would; reads still answer.
struct WritesFail {
    inner: fulfilld::store::Store,
    failed: tokio_util::sync::CancellationToken,
}

fn full() -> StoreError {
    StoreError::Io(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "injected: no space left on device",
    ))
}

#[async_trait::async_trait]
impl Storage for WritesFail {
    async fn ingest(&self, _: NewEvent, _: Ctx) -> StoreResult<Ingested> {
        Err(full())
    }
    async fn transition(&self, _: &SessionId, _: Input, _: Ctx) -> StoreResult<Reply> {
        Err(full())
    }
    async fn take_over(&self, ctx: Ctx) -> StoreResult<usize> {
        self.inner.take_over(ctx).await
    }
    async fn reconcile_awaiting(&self, _: u64, _: usize, _: Ctx) -> StoreResult<usize> {
        Err(full())
    }
    async fn record_delivery(&self, _: Delivered, _: Ctx) -> StoreResult<()> {
        Err(full())
    }
    async fn resend(&self, _: &SessionId, _: &str, _: u64) -> StoreResult<bool> {
        Err(full())
    }
    async fn prune_event_bodies(
        &self,
        _: u64,
        _: Option<String>,
        _: usize,
    ) -> StoreResult<fulfilld::store::Pruned> {
        Err(full())
    }
    async fn finish_job(&self, _: &str, _: u64) -> StoreResult<()> {
        Err(full())
    }
    async fn due_jobs(
        &self,
        now: u64,
        limit: usize,
        kind: fulfilld::model::JobKind,
    ) -> StoreResult<Vec<(u64, Job)>> {
        self.inner.due_jobs(now, limit, kind).await
    }
    async fn job_due(&self, key: &str) -> StoreResult<Option<u64>> {
        self.inner.job_due(key).await
    }
    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.inner.queue_stats().await
    }
    fn queue_changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.inner.queue_changed()
    }
    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        self.inner.session(id).await
    }
    async fn session_full(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.inner.session_full(id).await
    }
    async fn session_view(&self, id: &SessionId) -> StoreResult<Option<SessionView>> {
        self.inner.session_view(id).await
    }
    async fn notification(&self, id: &str) -> StoreResult<Option<Notification>> {
        self.inner.notification(id).await
    }
    async fn list(&self, q: ListQuery) -> StoreResult<Page<SessionRecord>> {
        self.inner.list(q).await
    }
    async fn list_full(&self, q: ListQuery) -> StoreResult<Page<Session>> {
        self.inner.list_full(q).await
    }
    async fn state_counts(&self) -> StoreResult<Vec<(State, u64)>> {
        self.inner.state_counts().await
    }
    async fn event(&self, id: &str) -> StoreResult<Option<EventRecord>> {
        self.inner.event(id).await
    }
    async fn event_payload(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.event_payload(id).await
    }
    async fn event_count(&self) -> StoreResult<u64> {
        self.inner.event_count().await
    }
    async fn session_count(&self) -> StoreResult<u64> {
        self.inner.session_count().await
    }
    async fn ids_in_state(&self, state: State) -> StoreResult<Vec<String>> {
        self.inner.ids_in_state(state).await
    }
    async fn accounts(&self, limit: usize) -> StoreResult<Vec<String>> {
        self.inner.accounts(limit).await
    }
    async fn probe(&self) -> StoreResult<()> {
        Err(full())
    }
    async fn backup(&self, dest: &std::path::Path) -> StoreResult<BackupStats> {
        self.inner.backup(dest).await
    }
    async fn import(&self, _: Vec<Session>) -> StoreResult<()> {
        Err(full())
    }
    fn failed(&self) -> tokio_util::sync::CancellationToken {
        self.failed.clone()
    }
    fn derived_key(&self, purpose: &str) -> [u8; 32] {
        self.inner.derived_key(purpose)
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// A paid customer whose session is not known yet lands while the disk is
/// full: a calm "try again" (503), never "no such order" (404). The webhook
/// is refused with 503 too, so Stripe delivers it again later. And once the
/// store reports a failed commit, the server stops with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_is_a_calm_503_and_a_failed_commit_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let config = test_config(
        &dir.path().join("f.redb"),
        stripe.url(),
        Some(&receiver.url),
    );
    let failed = tokio_util::sync::CancellationToken::new();
    let store: fulfilld::store::Store = std::sync::Arc::new(WritesFail {
        inner: fulfilld::store::open_redb(&config.storage.path).unwrap(),
        failed: failed.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = fulfilld::app::Application::build_with_store(&config, listener, store)
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let server = tokio::spawn(app.run_until_stopped());

    let id = session_id("diskfull");
    let (session, items) = SampleSession::paid(&id, 1).build();
    stripe.insert(session.clone(), items);
    let page = reqwest::get(format!("{base}/after-checkout?session_id={id}"))
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    let body = page.text().await.unwrap();
    assert!(body.contains("try again"), "{body}");
    assert!(!body.to_lowercase().contains("not found"), "{body}");

    let (body, header) = signed(&fulfilld::stripe::double::event_body(
        "evt_df_1",
        "checkout.session.completed",
        &session,
    ));
    let hook = reqwest::Client::new()
        .post(format!("{base}/webhook"))
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 503, "not acknowledged before it is durable");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);

    failed.cancel();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("the server stops by itself")
        .unwrap();
    assert!(
        matches!(stopped, Err(fulfilld::app::AppError::StoreFailed)),
        "{stopped:?}"
    );
}

/// The database holds customers' personal data: its file is readable by the
/// service's user only, from the first start.
#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    if crate::helpers::pg::redb_only("the_database_file_is_private") {
        return;
    }
    let app = spawn_app().await;
    let mode = std::fs::metadata(app.db_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
