//! The commands of the `fulfilld` binary, one module each. `main.rs` only
//! parses the command line and calls them; here they can be tested.
//!
//! Each command returns the process's exit code, or a `CliError` whose
//! source chain the binary prints (`fulfilld: <error>: <cause>`, exit 1).

pub mod backup;
pub mod check_config;
pub mod demo;
pub mod healthcheck;
pub mod logging;
pub mod migrate_to;
pub mod send_test_email;
pub mod serve;

use std::net::SocketAddr;

use crate::{app::AppError, config::ConfigError, demo::DemoError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr} (server.listen)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    // Boxed: both are large, and every command returns this error.
    #[error(transparent)]
    App(Box<AppError>),
    #[error(transparent)]
    Demo(Box<DemoError>),
    #[error("cannot build HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot resolve the backup path")]
    BackupPath(#[source] std::io::Error),
    /// A backup that did not happen, with the reason in full.
    #[error("{0}")]
    Backup(String),
    /// A copy to PostgreSQL that did not happen, with the reason in full.
    #[error("{0}")]
    Migrate(String),
}

impl From<AppError> for CliError {
    fn from(e: AppError) -> Self {
        CliError::App(Box::new(e))
    }
}

impl From<DemoError> for CliError {
    fn from(e: DemoError) -> Self {
        CliError::Demo(Box::new(e))
    }
}

/// The multi-threaded runtime every async command runs on.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        // Database reads run on the blocking pool and take microseconds:
        // a few threads serve them all, and every extra thread keeps an
        // allocator heap of its own (peak RSS, measured below 64 MB).
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Where a command on this machine reaches the server: `server.listen`, with
/// an unspecified address (`0.0.0.0`, as in Docker) replaced by loopback.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    }
}

/// The first SIGTERM or SIGINT stops gracefully; a second one exits at once
/// (safe: nothing is acknowledged before it is durable).
async fn stop_on_signals(stop: tokio_util::sync::CancellationToken) {
    wait_for_signal().await;
    tracing::info!("stop requested; finishing in-flight work (signal again to exit now)");
    stop.cancel();
    wait_for_signal().await;
    eprintln!("fulfilld: second signal, exiting now");
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:4242".parse().unwrap();
        assert_eq!(local_address(any), "127.0.0.1:4242".parse().unwrap());
        let here: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(local_address(here), here);
    }

    #[test]
    fn errors_read_as_a_chain() {
        let e = CliError::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            e.to_string(),
            "cannot listen on 127.0.0.1:1 (server.listen)"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
