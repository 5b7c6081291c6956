//! The `fulfilld` binary: parses the command line and runs a command from
//! `fulfilld::cli`. Errors end here: printed with their causes, exit 1.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fulfilld::{cli, config::ConfigSource};

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
    /// With --config, the file's [shop] is shown on its pages.
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
    /// Copy every record of the stopped redb file (storage.path) into an
    /// empty PostgreSQL database, to run several replicas on it
    MigrateTo {
        /// postgres://user:password@host/dbname (default: storage.url)
        url: Option<String>,
    },
    /// Send one test message through the configured SMTP server (smtp.url,
    /// smtp.from) and print the server's answer
    SendTestEmail {
        /// Where to send it
        address: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = match cli.config {
        Some(path) => ConfigSource {
            path,
            explicit: true,
        },
        None => ConfigSource {
            path: PathBuf::from("config.toml"),
            explicit: false,
        },
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => cli::serve::run(&source),
        Command::CheckConfig => Ok(cli::check_config::run(&source)),
        Command::Healthcheck => cli::healthcheck::run(&source),
        Command::Demo { listen } => cli::demo::run(listen, &source),
        Command::Backup { path } => cli::backup::run(&source, &path),
        Command::MigrateTo { url } => cli::migrate_to::run(&source, url.as_deref()),
        Command::SendTestEmail { address } => cli::send_test_email::run(&source, &address),
    };
    match result.map_err(anyhow::Error::from) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}`: the error and each of its causes, `: `-separated.
            eprintln!("fulfilld: {e:#}");
            ExitCode::from(1)
        }
    }
}
