//! `fulfilld demo`: starts the demo (see `crate::demo`) and prints how to sign in.

use std::{net::SocketAddr, process::ExitCode};

use super::{CliError, logging, runtime, stop_on_signals};
use crate::{
    config::{ConfigSource, LogFormat, ShopConfig},
    demo::DemoInfo,
};

/// `source`: with `--config`, the file's `[shop]` shows on the demo's
/// pages and emails (the rest of the demo's configuration is its own).
pub fn run(listen: SocketAddr, source: &ConfigSource) -> Result<ExitCode, CliError> {
    // The story says what happens, one line a step; the server's own
    // lines (its deliberate failures included) would bury the sign-in
    // details and look like the demo broke. RUST_LOG=info shows them.
    logging::init_with_default(LogFormat::Text, "warn,fulfilld=off");
    let shop = if source.explicit {
        ShopConfig::from_file(&source.path)?
    } else {
        ShopConfig::default()
    };
    runtime()?.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(stop_on_signals(stop.clone()));
        let printer = stop.clone();
        crate::demo::run(listen, shop, stop, move |info| {
            let text = banner(info);
            crate::demo::print_or_stop(&text, &printer);
            text
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// What the demo prints once it serves, and again when its story is over.
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
