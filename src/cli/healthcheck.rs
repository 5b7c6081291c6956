//! `fulfilld healthcheck`: exit 0 when the server on `server.listen` answers
//! `/healthz` (Docker's `HEALTHCHECK`, in an image with no curl).

use std::{process::ExitCode, time::Duration};

use super::{CliError, local_address, runtime};
use crate::config::{Config, ConfigSource};

pub fn run(source: &ConfigSource) -> Result<ExitCode, CliError> {
    // Only server.listen matters here, so secrets need not be present.
    let host = local_address(Config::listen_from(source)?);
    runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(CliError::HttpClient)?;
        match client.get(format!("http://{host}/healthz")).send().await {
            Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
            Ok(r) => {
                eprintln!("unhealthy: http://{host}/healthz answered {}", r.status());
                Ok(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("unhealthy: http://{host}/healthz: {}", reason(&e));
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// Why the request failed, in words: reqwest's own says only "error sending
/// request"; the cause (connection refused, a timeout) is in its source chain.
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within 3 s (is the server overloaded or stuck?)".into();
    }
    let mut deepest = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        deepest = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        format!("cannot connect ({deepest}): is fulfilld running, and is server.listen right?")
    } else {
        deepest
    }
}
