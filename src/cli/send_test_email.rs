//! `fulfilld send-test-email ADDRESS`: one message through the configured
//! SMTP server, and the server's answer, so a merchant knows mail works
//! before a customer depends on it.

use std::process::ExitCode;

use super::{CliError, runtime};
use crate::config::{Config, ConfigSource};

pub fn run(source: &ConfigSource, to: &str) -> Result<ExitCode, CliError> {
    let config = Config::load(source)?;
    runtime()?.block_on(async move {
        match crate::notify::send_test_email(&config, to).await {
            Ok(answer) => {
                eprintln!("sent to {to}: the server answered {answer}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("not sent: {e}");
                Ok(ExitCode::from(if e.is_setup() { 2 } else { 1 }))
            }
        }
    })
}
