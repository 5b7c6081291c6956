//! `fulfilld demo`: starts the demo (see `crate::demo`) and prints how to sign in.

use std::{net::SocketAddr, process::ExitCode};

use super::{CliError, logging, runtime, stop_on_signals};
use crate::{config::LogFormat, demo::DemoInfo};

pub fn run(listen: SocketAddr) -> Result<ExitCode, CliError> {
    logging::init(LogFormat::Text);
    runtime()?.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(stop_on_signals(stop.clone()));
        crate::demo::run(listen, stop, |info| print!("{}", banner(info))).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// What the demo prints once it serves.
fn banner(info: &DemoInfo) -> String {
    format!(
        "fulfilld demo: a complete instance with a built-in Stripe test double (no Stripe account needed)\n\n  \
         dashboard: {}\n  username:  {}\n  password:  {}\n  API token: {}\n  database:  {} (temporary: removed on exit)\n\n\
         Press Ctrl-C to stop.\n\n",
        info.dashboard,
        info.username,
        info.password,
        info.api_token,
        info.database.display()
    )
}
