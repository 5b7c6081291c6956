//! `fulfilld serve` (the default): the server and its background workers.

use std::process::ExitCode;

use super::{CliError, logging, runtime, stop_on_signals};
use crate::{
    app::Application,
    config::{Config, ConfigSource},
};

pub fn run(source: &ConfigSource) -> Result<ExitCode, CliError> {
    let (config, env_warnings) = Config::load_with_warnings(source)?;
    logging::init(config.log.format);
    for w in env_warnings.iter().cloned().chain(config.warnings()) {
        tracing::warn!("{w}");
    }
    runtime()?.block_on(async {
        let addr = config.server.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CliError::Listen { addr, source })?;
        let app = Application::build(&config, listener).await?;
        tokio::spawn(stop_on_signals(app.stop_token()));
        app.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}
