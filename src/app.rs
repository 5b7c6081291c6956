//! Composition root: builds every part from the configuration and runs the
//! HTTP server and the job worker until stopped.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    fulfill::{Fulfiller, callback::CallbackSender},
    http::{
        AppState,
        auth::AdminAuth,
        routes,
        serve::{ServeOptions, serve},
    },
    notify::Notifier,
    store::{Store, StoreError},
    stripe::StripeClient,
    worker::{self, Worker},
};

/// How long in-flight requests get to finish after a stop is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The binary prints the chain: this message, then the store error and
    /// its own causes (e.g. the operating system's "Permission denied").
    #[error("cannot open the database at {path}{hint}")]
    Store {
        path: String,
        #[source]
        error: StoreError,
        hint: &'static str,
    },
    #[error("{0}")]
    Setup(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// A commit's outcome was unknown, so writes stopped: exit non-zero and
    /// let the supervisor restart fulfilld on a database it can trust.
    #[error(
        "the database stopped accepting writes after a failed commit; exiting so fulfilld is restarted"
    )]
    StoreFailed,
}

impl AppError {
    fn store(path: &std::path::Path, error: StoreError) -> Self {
        let hint = if error.is_corruption() {
            " (the file is damaged: stop here, keep it for inspection, and restore the last backup)"
        } else {
            ""
        };
        AppError::Store {
            path: path.display().to_string(),
            error,
            hint,
        }
    }
}

/// Opens the configured backend: PostgreSQL at `storage.url`, else the
/// redb file at `storage.path`.
pub async fn open_store(config: &Config) -> Result<Store, AppError> {
    if let Some(url) = &config.storage.url {
        let store = crate::store::pg::PgStore::open(url.expose().clone())
            .await
            .map_err(|error| AppError::Store {
                path: "PostgreSQL (storage.url)".into(),
                error,
                hint: "",
            })?;
        return Ok(Arc::new(store));
    }
    let path = config.storage.path.clone();
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || crate::store::open_redb(&path)
    })
    .await
    .map_err(|e| AppError::Setup(e.to_string()))?
    .map_err(|error| AppError::store(&path, error))
}

/// The backend and where it is, for people: `redb ./data/fulfilld.redb` or
/// `PostgreSQL db.internal:5432/fulfilld` (never the password).
fn backend_description(config: &Config) -> String {
    let Some(url) = &config.storage.url else {
        return format!("redb {}", config.storage.path.display());
    };
    let pg = &url.expose().config;
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "PostgreSQL {host}:{port}/{}",
        pg.get_dbname().unwrap_or("postgres")
    )
}

/// Where the per-boot local token lives: beside the database.
pub fn local_token_path(db: &std::path::Path) -> std::path::PathBuf {
    db.with_file_name(".fulfilld-local-token")
}

/// Writes a fresh random token, readable by this user only.
fn write_local_token(db: &std::path::Path) -> std::io::Result<crate::config::Secret> {
    use std::io::Write;
    let token = crate::model::new_id("local").map_err(std::io::Error::other)?;
    let path = local_token_path(db);
    let _ = std::fs::remove_file(&path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(crate::config::Secret::new(token))
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    fulfiller: Arc<Fulfiller>,
    stop: CancellationToken,
    max_connections: usize,
    event_retention_days: u32,
    /// For the startup line: the backend and where it is (no secrets).
    backend: String,
    public_url: String,
}

impl Application {
    /// Opens the database (checking its integrity), takes over claims left by
    /// an earlier process, and prepares to serve on `listener`.
    pub async fn build(config: &Config, listener: TcpListener) -> Result<Application, AppError> {
        let store = open_store(config).await?;
        Self::build_with_store(config, listener, store).await
    }

    /// `build` on a store opened elsewhere (another backend, or a test's).
    pub async fn build_with_store(
        config: &Config,
        listener: TcpListener,
        store: Store,
    ) -> Result<Application, AppError> {
        Self::build_with_clock(config, listener, store, None).await
    }

    /// `build_with_store` with the fulfiller on `clock` (tests that need
    /// time to pass without waiting for it).
    pub async fn build_with_clock(
        config: &Config,
        listener: TcpListener,
        store: Store,
        clock: Option<Arc<dyn crate::time::Clock>>,
    ) -> Result<Application, AppError> {
        let path = config.storage.path.clone();
        // Every deliverable file and key file is checked before anything
        // is served: a missing one would fail a paying customer later.
        let catalogue = crate::delivery::Catalogue::load(&config.delivery)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        if catalogue.enabled() {
            tracing::info!(catalogue = %catalogue.summary(), "digital delivery");
        }
        let key = config
            .stripe
            .secret_key
            .clone()
            .ok_or_else(|| AppError::Setup("stripe.secret_key is required".into()))?;
        let stripe = StripeClient::new(
            config.stripe.api_base.as_str(),
            key,
            &config.stripe.api_version,
            Duration::from_millis(config.jobs.retry_base_ms),
        )
        .map_err(|e| AppError::Setup(e.to_string()))?;
        let callback = match (
            &config.fulfillment.callback_url,
            &config.fulfillment.callback_secret,
        ) {
            (Some(url), Some(secret)) => Some(
                CallbackSender::new(url.as_str(), secret.expose())
                    .map_err(|e| AppError::Setup(e.to_string()))?,
            ),
            _ => None,
        };
        let mut fulfiller = Fulfiller::new(store, stripe, callback, config.jobs.clone())
            .map_err(|e| AppError::Setup(e.to_string()))?;
        if let Some((notifier, channels)) =
            Notifier::from_config(config).map_err(|e| AppError::Setup(e.to_string()))?
        {
            fulfiller = fulfiller.with_notifications(channels, Arc::new(notifier));
        }
        if let Some(clock) = clock {
            fulfiller = fulfiller.with_clock(clock);
        }
        let fulfiller = Arc::new(fulfiller);
        fulfiller
            .take_over_claims()
            .await
            .map_err(|error| match config.storage.url {
                Some(_) => AppError::Store {
                    path: "PostgreSQL (storage.url)".into(),
                    error,
                    hint: "",
                },
                None => AppError::store(&path, error),
            })?;
        let mut state = AppState::new(
            fulfiller.clone(),
            config.stripe.webhook_secrets.clone(),
            config.stripe.tolerance_secs,
            config.admin.api_token.clone(),
            AdminAuth::new(
                config.admin.username.as_deref(),
                config.admin.password.as_ref(),
                config.admin.password_hash.as_ref(),
                config.server.public_url.is_https(),
            )
            .map_err(|e| AppError::Setup(e.to_string()))?
            .with_device_key(fulfiller.store().derived_key("admin device cookies"))
            .with_shared(fulfiller.store().sign_ins()),
            config.server.public_url.as_str(),
        );
        state.live_key = config.is_live();
        let smtp = config.smtp.url.is_some();
        state.shop = crate::views::landing::Shop {
            name: config.shop.name.clone(),
            url: config.shop.url.as_ref().map(|u| u.to_string()),
            support_email: config
                .shop
                .support_email
                .as_ref()
                .map(|m| m.email.to_string()),
            receipt_email: smtp && config.fulfillment.receipt_email,
            payment_failed_email: smtp,
        };
        state.trusted_proxies = config.server.trusted_proxies.clone();
        state.catalogue = Arc::new(catalogue);
        // The local token lets `fulfilld backup` ask this server for a
        // copy of its file; PostgreSQL is backed up with pg_dump instead.
        if config.storage.url.is_none() {
            state.db_path = path.clone();
            state.local_token = match write_local_token(&path) {
                Ok(token) => Some(token),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the local backup token; `fulfilld backup` will need admin.api_token");
                    None
                }
            };
        }
        let state = Arc::new(state);
        let addr = listener.local_addr()?;
        Ok(Application {
            listener,
            addr,
            state,
            fulfiller,
            stop: CancellationToken::new(),
            max_connections: config.server.max_connections,
            event_retention_days: config.storage.event_retention_days,
            backend: backend_description(config),
            public_url: config.server.public_url.to_string(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cancel it to stop: the server stops accepting, in-flight requests and
    /// jobs finish, then `run_until_stopped` returns.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn store(&self) -> Store {
        self.fulfiller.store().clone()
    }

    pub fn fulfiller(&self) -> Arc<Fulfiller> {
        self.fulfiller.clone()
    }

    pub async fn run_until_stopped(self) -> Result<(), AppError> {
        let stop = self.stop.clone();
        let worker =
            tokio::spawn(Worker::new(self.fulfiller.clone()).run_until_stopped(stop.clone()));
        let reconciler = tokio::spawn(worker::reconcile_until_stopped(
            self.fulfiller.clone(),
            stop.clone(),
        ));
        let pruner = tokio::spawn(crate::retention::prune_until_stopped(
            self.fulfiller.store().clone(),
            self.fulfiller.clock().clone(),
            self.event_retention_days,
            stop.clone(),
        ));
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            addr = %self.addr,
            backend = %self.backend,
            public_url = %self.public_url,
            "fulfilld {} listening on {} ({}), public URL {}",
            env!("CARGO_PKG_VERSION"),
            self.addr,
            self.backend,
            self.public_url,
        );
        let store_failed = self.fulfiller.store().failed();
        let watchdog = tokio::spawn({
            let stop = stop.clone();
            let store_failed = store_failed.clone();
            async move {
                tokio::select! {
                    _ = store_failed.cancelled() => {
                        tracing::error!("database writes stopped after a failed commit; shutting down");
                        stop.cancel();
                    }
                    _ = stop.cancelled() => {}
                }
            }
        });
        // Header and body deadlines, the connection cap and the body budget:
        // see `http::serve` and `http::limits`.
        let served = serve(
            self.listener,
            routes(self.state.clone()),
            ServeOptions {
                max_connections: self.max_connections,
                grace: SHUTDOWN_GRACE,
            },
            stop.clone(),
        )
        .await;
        // The server can also end on its own (an I/O error): stop the worker then too.
        stop.cancel();
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "worker task failed");
        }
        let _ = reconciler.await;
        let _ = pruner.await;
        let _ = watchdog.await;
        // Everything that writes has stopped: close the file cleanly.
        self.fulfiller.store().close().await;
        served?;
        if store_failed.is_cancelled() {
            return Err(AppError::StoreFailed);
        }
        tracing::info!("stopped");
        Ok(())
    }
}
