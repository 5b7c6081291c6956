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
    /// A complete instance on a temporary database with a built-in Stripe
    /// test double, fed with signed sample events. No Stripe account needed.
    Demo {
        /// Where to serve (port 0 picks a free one)
        #[arg(long, default_value = "127.0.0.1:4242")]
        listen: std::net::SocketAddr,
    },
    /// Write a consistent copy of the database to PATH (safe while serve runs)
    Backup {
        /// The new file (must not exist yet)
        path: PathBuf,
    },
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
        Command::Demo { listen } => demo(listen),
        Command::Backup { path } => backup(&source, &path),
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
    // Colours only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        let addr = config.server.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.listen)"))?;
        let app = Application::build(&config, listener).await?;
        tokio::spawn(stop_on_signals(app.stop_token()));
        app.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
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

fn demo(listen: std::net::SocketAddr) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Text);
    runtime()?.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(stop_on_signals(stop.clone()));
        fulfilld::demo::run(listen, stop, |info| {
            println!(
                "fulfilld demo: a complete instance with a built-in Stripe test double (no Stripe account needed)\n\n  \
                 dashboard: {}\n  username:  {}\n  password:  {}\n  API token: {}\n  database:  {} (temporary: removed on exit)\n\n\
                 Press Ctrl-C to stop.\n",
                info.dashboard, info.username, info.password, info.api_token, info.database.display()
            );
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn backup(source: &ConfigSource, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = load(source)?;
    let dest = std::path::absolute(path).context("cannot resolve the backup path")?;
    match fulfilld::store::backup_file(&config.storage.path, &dest) {
        Ok(stats) => {
            println!(
                "backup written to {}: {} sessions, {} events",
                dest.display(),
                stats.sessions,
                stats.events
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) if !fulfilld::store::is_locked(&e) => {
            anyhow::bail!("cannot back up {}: {e}", config.storage.path.display())
        }
        Err(_) => {}
    }
    // A running server holds the file: ask it to write the copy, with the
    // token it left beside the database (or admin.api_token).
    let local = std::fs::read_to_string(fulfilld::app::local_token_path(&config.storage.path))
        .ok()
        .map(|t| t.trim().to_string());
    let api_token = config
        .admin
        .api_token
        .as_ref()
        .map(|t| t.expose().to_string());
    if local.is_none() && api_token.is_none() {
        anyhow::bail!(
            "the server is running and holds {}, but its local token is unreadable and admin.api_token is not set",
            config.storage.path.display()
        );
    }
    let host = local_address(config.server.listen);
    runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .context("cannot build HTTP client")?;
        let mut request = client
            .post(format!("http://{host}/admin/api/backup"))
            .json(&serde_json::json!({"path": dest}));
        request = match (&local, &api_token) {
            (Some(local), _) => request.header("x-fulfilld-local-token", local),
            (None, Some(token)) => request.bearer_auth(token),
            (None, None) => request,
        };
        let r = request.send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the server on {host}: {}", e.without_url())
        })?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!(
                "the server could not write the backup ({status}): {}",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
            );
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

/// Where a command on this machine reaches the server: `server.listen`, with
/// an unspecified address (`0.0.0.0`, as in Docker) replaced by loopback.
fn local_address(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    if listen.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    }
}

fn healthcheck(source: &ConfigSource) -> anyhow::Result<ExitCode> {
    // Only server.listen matters here, so secrets need not be present.
    let host = local_address(Config::listen_from(source).context("invalid configuration")?);
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
