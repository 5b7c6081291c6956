//! The PostgreSQL backend (`storage.url`), for several replicas on one
//! database with the guarantees of one process: connecting (TLS through
//! rustls, with libpq's `sslmode` and `sslrootcert`), the versioned schema
//! migrated at startup under an advisory lock (`migrate`), the writer's
//! batches (`writer`, on the shared operations through `txn`), the
//! `Storage` implementation (`store`) and the copy from a redb file
//! (`copy`).
//!
//! Values are the same serde JSON the redb backend stores.

pub mod copy;
pub mod migrate;
mod store;
mod txn;
mod writer;

pub use store::{BACKUP_WITH_PG_DUMP, PgStore, TAKE_MS};

use std::{str::FromStr, sync::Arc};

use tokio_postgres::{Client, config::SslMode};

/// What can go wrong talking to PostgreSQL. Messages never carry the URL
/// (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("storage.url is not a PostgreSQL URL fulfilld can use: {0}")]
    Url(String),
    #[error("cannot read sslrootcert {path}: {reason}")]
    RootCert { path: String, reason: String },
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    #[error("PostgreSQL")]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "the database's schema is version {found}, newer than this fulfilld knows ({known}); run the newer version, or restore a backup taken before the upgrade"
    )]
    NewerSchema { found: i32, known: i32 },
    #[error(
        "schema version {version} in the database differs from this fulfilld's (checksum {found}, expected {expected}); it was changed by hand or by another build"
    )]
    ChangedMigration {
        version: i32,
        found: String,
        expected: String,
    },
}

/// How long a connection may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Idle time before TCP keepalives probe a connection.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long sent data may go unacknowledged before the connection is dropped.
const TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Settings of every connection, so that no replica can hold up the
/// others for long:
/// * a transaction left open by a frozen replica (a stopped process, a
///   network partition) ends after 30 s, releasing its locks;
/// * a batch waits at most 20 s for a lock (then its batch is retried),
///   and no statement runs longer than 60 s;
/// * READ COMMITTED whatever the server's default: batches rely on their
///   advisory locks, not on snapshot isolation, and a stricter level would
///   only add serialization failures;
/// * prepared statements planned for each execution's values: a generic
///   plan made while a table was nearly empty scans it whole forever after
///   (it did, in the webhook benchmark: `id = ANY($1)` on 100,000 events).
const SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '30s';
    SET lock_timeout = '20s';
    SET statement_timeout = '60s';
    SET default_transaction_isolation = 'read committed';
    SET plan_cache_mode = force_custom_plan";

/// How to reach the database: the client settings, and how TLS is used.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    /// `sslmode=disable`: no TLS at all.
    pub tls: bool,
    /// `sslrootcert`: certificates trusted besides the bundled web roots.
    pub root_cert: Option<String>,
}

impl Target {
    /// Parses a `postgres://` (or `postgresql://`) URL with libpq's TLS
    /// parameters. tokio-postgres knows only `disable`, `prefer` and
    /// `require`; `verify-ca` and `verify-full` mean `require` here, since
    /// fulfilld always verifies the server's certificate and name when it
    /// uses TLS (unlike libpq's `require`). `sslrootcert` names a PEM file of
    /// CAs to trust (managed databases' CAs are often not public ones).
    pub fn parse(url: &str) -> Result<Target, PgError> {
        let mut parsed = reqwest::Url::parse(url)
            .map_err(|e| PgError::Url(format!("it does not parse ({e})")))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(PgError::Url(format!(
                "the scheme is {:?}, not postgres",
                parsed.scheme()
            )));
        }
        let mut sslmode = None;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = Some(v.into_owned()),
                "sslrootcert" => root_cert = Some(v.into_owned()),
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        let (mode, tls) = match sslmode.as_deref() {
            None | Some("prefer") => (SslMode::Prefer, true),
            Some("disable") => (SslMode::Disable, false),
            Some("require" | "verify-ca" | "verify-full") => (SslMode::Require, true),
            Some(other) => {
                return Err(PgError::Url(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let mut config = tokio_postgres::Config::from_str(parsed.as_str())
            .map_err(|e| PgError::Url(e.to_string()))?;
        config.ssl_mode(mode);
        // A database that stops answering is noticed in seconds, not in
        // the operating system's two hours (unless the URL says otherwise).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 3600) {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_dbname().is_none() {
            return Err(PgError::Url("it names no database".into()));
        }
        Ok(Target {
            config,
            tls,
            root_cert,
        })
    }

    /// Connects, driving the connection on a task of its own (it ends, and
    /// logs why, when the connection does).
    pub async fn connect(&self) -> Result<Client, PgError> {
        self.connect_notifying(None).await
    }

    /// `connect`; with `notify`, each notification the connection receives
    /// (`LISTEN`) wakes its waiters.
    pub async fn connect_notifying(
        &self,
        notify: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<Client, PgError> {
        if !self.tls {
            let (client, connection) = self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(PgError::Connect)?;
            drive(connection, notify);
            return settle(client).await;
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.rustls()?);
        let (client, connection) = self.config.connect(tls).await.map_err(PgError::Connect)?;
        drive(connection, notify);
        settle(client).await
    }

    fn rustls(&self) -> Result<rustls::ClientConfig, PgError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &self.root_cert {
            let bad = |reason: String| PgError::RootCert {
                path: path.clone(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("it holds no certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Url(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Applies `SESSION_SETTINGS` to a new connection.
async fn settle(client: Client) -> Result<Client, PgError> {
    client
        .batch_execute(SESSION_SETTINGS)
        .await
        .map_err(PgError::Connect)?;
    Ok(client)
}

/// Any PostgreSQL failure, as the store reports it.
pub(crate) fn pg_error(e: impl Into<PgError>) -> crate::store::StoreError {
    crate::store::StoreError::Backend(Box::new(e.into()))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, crate::store::StoreError> {
    serde_json::from_slice(bytes).map_err(|source| crate::store::StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, crate::store::StoreError> {
    serde_json::to_vec(value).map_err(crate::store::StoreError::Encode)
}

/// Milliseconds as a `bigint` (they fit until the year 292,278,994).
pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn kind_name(kind: crate::model::JobKind) -> &'static str {
    match kind {
        crate::model::JobKind::Fulfill => "fulfill",
        crate::model::JobKind::Deliver => "deliver",
    }
}

pub(crate) fn job_session(job: &crate::model::Job) -> &str {
    match job {
        crate::model::Job::Fulfill { session_id, .. }
        | crate::model::Job::Deliver { session_id, .. } => session_id,
    }
}

fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notify: Option<Arc<tokio::sync::Notify>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    if let Some(n) = &notify {
                        n.notify_waiters();
                        n.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::report::chain(&e), "a PostgreSQL connection ended");
                    return;
                }
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_understood_and_others_kept() {
        let t = Target::parse("postgres://app:s3cret@db.example:6543/shop?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=fulfilld").unwrap();
        assert!(t.tls);
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t.config.get_dbname(), Some("shop"));
        assert_eq!(t.config.get_user(), Some("app"));
        assert_eq!(t.config.get_ports(), &[6543]);
        assert_eq!(t.config.get_application_name(), Some("fulfilld"));
        let t = Target::parse("postgresql://app@localhost/shop?sslmode=disable").unwrap();
        assert!(!t.tls);
        let t = Target::parse("postgres://app@localhost/shop").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn a_bad_url_is_refused_without_showing_its_password() {
        for url in [
            "mysql://app:s3cret@db/shop",
            "postgres://app:s3cret@db/shop?sslmode=always",
            "postgres://app:s3cret@db",
            "not a url s3cret",
        ] {
            let e = Target::parse(url).unwrap_err();
            assert!(matches!(e, PgError::Url(_)), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn an_unreadable_root_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [empty.display().to_string(), "/nonexistent/ca.pem".into()] {
            let t = Target::parse(&format!(
                "postgres://app@localhost/shop?sslmode=require&sslrootcert={path}"
            ))
            .unwrap();
            match t.rustls() {
                Err(e @ PgError::RootCert { .. }) => assert!(e.to_string().contains(&path)),
                other => panic!("{path}: {:?}", other.map(|_| ())),
            }
        }
    }
}
