//! `fulfilld migrate-to [URL]`: copies every record of the stopped redb
//! file at `storage.path` into an empty PostgreSQL database (`URL`, or
//! `storage.url`). The redb file is only read: it stays as it was, a
//! backup of the moment of the move.

use std::process::ExitCode;

use super::{CliError, runtime};
use crate::{
    config::{Config, ConfigSource},
    store::{self, pg::Target},
};

pub fn run(source: &ConfigSource, url: Option<&str>) -> Result<ExitCode, CliError> {
    let mut config = Config::load(source)?;
    let target = match (url, config.storage.url.take()) {
        (Some(url), _) => match Target::parse(url) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("fulfilld migrate-to: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        (None, Some(configured)) => configured.expose().clone(),
        (None, None) => {
            eprintln!(
                "fulfilld migrate-to: name the PostgreSQL database: `fulfilld migrate-to postgres://user:password@host/dbname`, or set storage.url (storage.url_file keeps the password out of the command line)"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let path = config.storage.path.clone();
    if !path.exists() {
        return Err(CliError::Migrate(format!(
            "there is no redb file at {} (storage.path) to copy",
            path.display()
        )));
    }
    // What a stopped server acknowledged but had not yet checkpointed, and
    // an older layout, are taken care of as a start would (this also
    // refuses a file a running server holds).
    super::backup::apply_acknowledged(&config).map_err(|e| match e {
        CliError::Backup(m) => CliError::Migrate(format!(
            "{m} (stop every fulfilld serve using {} first)",
            path.display()
        )),
        other => other,
    })?;
    let place = describe(&target);
    let copied = runtime()?.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let src = path.clone();
        let dump = tokio::task::spawn_blocking(move || {
            store::redb::dump_file(&src, &mut |row| {
                tx.blocking_send(row)
                    .map_err(|_| store::StoreError::Stopped)
            })
        });
        let finished = async { dump.await.map_err(store::StoreError::Task)? };
        store::pg::copy::copy_into(&target, rx, finished).await
    });
    let copied = copied.map_err(|e| {
        CliError::Migrate(format!(
            "cannot copy {} to {place}: {}; nothing was committed",
            path.display(),
            crate::report::chain(&e)
        ))
    })?;
    println!(
        "copied {} sessions, {} events, {} notifications and {} queued jobs from {} to {place}",
        copied.sessions,
        copied.events,
        copied.notifications,
        copied.jobs,
        path.display()
    );
    println!(
        "next: set storage.url (or storage.url_file) to that database and start fulfilld serve; {} stays as it was, a backup of this moment",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the copy went, without the password.
fn describe(target: &Target) -> String {
    let host = match target.config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!(
        "PostgreSQL database {} on {host}",
        target.config.get_dbname().unwrap_or("?")
    )
}
