//! `fulfilld backup PATH`: a consistent copy of the database, written here
//! when no server holds the file, else by the running server on request.

use std::{path::Path, process::ExitCode, time::Duration};

use super::{CliError, local_address, runtime};
use crate::{
    config::{Config, ConfigSource},
    store,
};

pub fn run(source: &ConfigSource, path: &Path) -> Result<ExitCode, CliError> {
    let config = Config::load(source)?;
    if config.storage.url.is_some() {
        eprintln!("fulfilld backup: {}", store::pg::BACKUP_WITH_PG_DUMP);
        return Ok(ExitCode::from(2));
    }
    let dest = std::path::absolute(path).map_err(CliError::BackupPath)?;
    let mut copied = store::redb::backup_file(&config.storage.path, &dest);
    if let Err(store::StoreError::Unapplied { deliveries, .. }) = &copied {
        // The server stopped without a checkpoint (a crash): apply what it
        // acknowledged, as its next start would, then copy the file.
        println!("applying {deliveries} webhook deliveries the stopped server acknowledged");
        apply_acknowledged(&config)?;
        copied = store::redb::backup_file(&config.storage.path, &dest);
    }
    match copied {
        Ok(stats) => {
            println!(
                "backup written to {}: {} sessions, {} events",
                dest.display(),
                stats.sessions,
                stats.events
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) if !matches!(e, store::StoreError::Locked) => {
            return Err(CliError::Backup(format!(
                "cannot back up {}: {}",
                config.storage.path.display(),
                crate::report::chain(&e)
            )));
        }
        Err(_) => {}
    }
    // A running server holds the file: ask it to write the copy, with the
    // token it left beside the database (or admin.api_token).
    let local = std::fs::read_to_string(crate::app::local_token_path(&config.storage.path))
        .ok()
        .map(|t| t.trim().to_string());
    let api_token = config
        .admin
        .api_token
        .as_ref()
        .map(|t| t.expose().to_string());
    if local.is_none() && api_token.is_none() {
        return Err(CliError::Backup(format!(
            "the server is running and holds {}, but its local token is unreadable and admin.api_token is not set",
            config.storage.path.display()
        )));
    }
    let host = local_address(config.server.listen);
    runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(CliError::HttpClient)?;
        let mut request = client
            .post(format!("http://{host}/admin/api/backup"))
            .json(&serde_json::json!({"path": dest}));
        request = match (&local, &api_token) {
            (Some(local), _) => request.header("x-fulfilld-local-token", local),
            (None, Some(token)) => request.bearer_auth(token),
            (None, None) => request,
        };
        let r = request.send().await.map_err(|e| {
            CliError::Backup(format!(
                "cannot reach the server on {host}: {}",
                e.without_url()
            ))
        })?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(CliError::Backup(format!(
                "the server could not write the backup ({status}): {}",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
            )));
        }
        println!(
            "backup written to {} by the running server: {} sessions, {} events",
            dest.display(),
            body["sessions"],
            body["events"]
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts the application on the database without serving (which replays
/// the acknowledgement log and takes over interrupted claims, like a start)
/// and closes it again with a checkpoint.
pub(super) fn apply_acknowledged(config: &Config) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::Backup(format!("cannot prepare the database: {e}")))?;
        let app = crate::app::Application::build(config, listener)
            .await
            .map_err(|e| CliError::Backup(format!("cannot apply the acknowledgement log: {e}")))?;
        app.store().close().await;
        Ok(())
    })
}
