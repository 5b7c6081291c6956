//! The `fulfilld` binary: parses the command line and runs a command.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use fulfilld::{
    app::Application,
    config::{Config, ConfigSource, LogFormat},
};

/// mimalloc instead of the system allocator: the ingest path allocates in
/// HTTP worker threads and frees in the writer thread, which glibc's malloc
/// serialises on arena locks (measured: ~20% of server CPU in malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fulfilld",
    version,
    about = "Exactly-once fulfillment of Stripe Checkout Sessions"
)]
struct Cli {
    /// Configuration file (default ./config.toml, optional)
    #[arg(long, global = true, env = "FULFILLD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook endpoint, landing page, API and background workers (the default)
    Serve,
    /// Load and validate the configuration, print it with secrets masked
    CheckConfig,
    /// Exit 0 when the server on server.listen answers /healthz
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = match &cli.config {
        Some(path) => ConfigSource {
            path: path.clone(),
            explicit: true,
        },
        None => ConfigSource {
            path: PathBuf::from("config.toml"),
            explicit: false,
        },
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&source),
        Command::CheckConfig => check_config(&source),
        Command::Healthcheck => healthcheck(&source),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fulfilld: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(source: &ConfigSource) -> anyhow::Result<Config> {
    Config::load(source).context("invalid configuration")
}

fn check_config(source: &ConfigSource) -> anyhow::Result<ExitCode> {
    match Config::load(source) {
        Ok(config) => {
            print!("{}", config.masked_toml());
            for w in config.warnings() {
                eprintln!("warning: {w}");
            }
            eprintln!("configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("fulfilld: invalid configuration: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,poem=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(source: &ConfigSource) -> anyhow::Result<ExitCode> {
    let config = load(source)?;
    init_logging(config.log.format);
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    runtime()?.block_on(async {
        let addr = config.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.listen)"))?;
        let app = Application::build(&config, listener).await?;
        let stop = app.stop_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested; finishing in-flight work");
            stop.cancel();
        });
        app.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
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

fn healthcheck(source: &ConfigSource) -> anyhow::Result<ExitCode> {
    // Only server.listen matters here, so secrets need not be present.
    let listen = Config::listen_from(source).context("invalid configuration")?;
    let host = if listen.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .context("cannot build HTTP client")?;
        match client.get(format!("http://{host}/healthz")).send().await {
            Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
            Ok(r) => {
                eprintln!("unhealthy: /healthz answered {}", r.status());
                Ok(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("unhealthy: {}", e.without_url());
                Ok(ExitCode::from(1))
            }
        }
    })
}
