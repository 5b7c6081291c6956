//! Sends what the outbox holds: email over SMTP (lettre) and Slack-compatible
//! JSON alerts. Fulfillment decides what to send and records it durably
//! first; this module only renders and transmits one entry at a time, and
//! says whether a failure is worth retrying.

use std::{future::Future, pin::Pin, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use serde_json::{Value, json};

use crate::{
    config::{Config, SmtpUrl, TlsMode},
    fulfill::{Channels, Outbox, OutboxError},
    model::{Notification, SessionDetail, SessionRecord},
    views::email::{self, Links},
};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("smtp.url: {0}")]
    SmtpUrl(String),
    #[error("{key}: {message}")]
    Address { key: &'static str, message: String },
    #[error("cannot build the alert HTTP client: {0}")]
    Http(String),
}

/// The SMTP transport for `smtp.url`, as parsed by the configuration (see
/// `SmtpUrl` for the forms it takes).
pub fn smtp_transport(url: &SmtpUrl) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
    let host = url.host();
    let tls_params = || {
        TlsParameters::new(host.to_string()).map_err(|e| NotifyError::SmtpUrl(format!("TLS: {e}")))
    };
    let tls = match url.tls() {
        TlsMode::Implicit => Tls::Wrapper(tls_params()?),
        TlsMode::Required => Tls::Required(tls_params()?),
        TlsMode::Opportunistic => Tls::Opportunistic(tls_params()?),
        TlsMode::None => Tls::None,
    };
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(url.port())
        .tls(tls);
    let builder = match url.credentials() {
        Some(c) => builder.credentials(Credentials::new(c.user.clone(), c.password.clone())),
        None => builder,
    };
    Ok(builder.timeout(Some(Duration::from_secs(30))).build())
}

pub struct Notifier {
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
    alert_url: Option<reqwest::Url>,
    http: reqwest::Client,
    public_url: String,
    retry_url: Option<String>,
    /// The domain of `Message-ID`s: the host of `server.public_url`.
    domain: String,
}

impl Notifier {
    /// Builds the senders from the configuration, with the channels they
    /// enable; `None` when neither email nor alerts are configured.
    pub fn from_config(config: &Config) -> Result<Option<(Notifier, Channels)>, NotifyError> {
        let smtp = match &config.smtp.url {
            Some(url) => Some(smtp_transport(url.expose())?),
            None => None,
        };
        let alert_url = config
            .notifications
            .webhook_url
            .as_ref()
            .map(|u| u.expose().url().clone());
        if smtp.is_none() && alert_url.is_none() {
            return Ok(None);
        }
        let from = match (&smtp, &config.smtp.from) {
            (Some(_), Some(f)) => Some(f.clone()),
            (Some(_), None) => {
                return Err(NotifyError::Address {
                    key: "smtp.from",
                    message: "is required when smtp.url is set".into(),
                });
            }
            _ => None,
        };
        let merchant_email = match (&smtp, &config.notifications.merchant_email) {
            (Some(_), Some(m)) => Some(m.to_string()),
            _ => None,
        };
        let public_url = config
            .server
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_string();
        let domain = config
            .server
            .public_url
            .url()
            .host_str()
            .map_or_else(|| "fulfilld.invalid".into(), str::to_string);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("fulfilld/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Http(e.to_string()))?;
        let channels = Channels {
            smtp: smtp.is_some(),
            merchant_email,
            alert_webhook: alert_url.is_some(),
            receipt: smtp.is_some() && config.fulfillment.receipt_email,
        };
        Ok(Some((
            Notifier {
                smtp,
                from,
                alert_url,
                http,
                public_url,
                retry_url: config
                    .notifications
                    .retry_url
                    .as_ref()
                    .map(|u| u.as_str().to_string()),
                domain,
            },
            channels,
        )))
    }

    fn links(&self) -> Links<'_> {
        Links {
            public_url: &self.public_url,
            retry_url: self.retry_url.as_deref(),
        }
    }

    async fn send_alert(&self, text: String) -> Result<(), OutboxError> {
        let Some(url) = &self.alert_url else {
            return Err(permanent(
                "notifications.webhook_url is no longer configured",
            ));
        };
        let answer = self
            .http
            .post(url.clone())
            .json(&json!({ "text": text }))
            .send()
            .await
            .map_err(|e| transient(format!("alert webhook unreachable: {}", e.without_url())))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        // Even a 4xx (a mistyped or revoked URL) is retried until give-up:
        // the merchant may fix the configuration in the meantime.
        Err(transient(format!(
            "alert webhook answered HTTP {}",
            status.as_u16()
        )))
    }

    async fn send_email(
        &self,
        n: &Notification,
        to: &str,
        mail: email::Email,
    ) -> Result<(), OutboxError> {
        let (Some(smtp), Some(from)) = (&self.smtp, &self.from) else {
            return Err(transient("smtp.url and smtp.from are not configured"));
        };
        // A customer-typed address is parsed, never pasted into a header.
        let to: Mailbox = to
            .parse()
            .map_err(|e| permanent(format!("not a deliverable address: {e}")))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(mail.subject)
            // Stable across retries, so a receiving server can drop a duplicate.
            .message_id(Some(format!("<{}@{}>", n.id, self.domain)))
            .date_now()
            .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
            .map_err(|e| permanent(format!("cannot build the message: {e}")))?;
        match smtp.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Only a refused mailbox is final. Everything else (bad
                // credentials, relay denied, a full queue) is a setup problem
                // the merchant can fix, so it is retried until give-up.
                let code = e.status().map(|c| c.to_string());
                let mailbox_refused = matches!(code.as_deref(), Some("550" | "551" | "553"));
                Err(OutboxError {
                    message: format!("SMTP: {e}"),
                    permanent: mailbox_refused,
                })
            }
        }
    }
}

fn permanent(message: impl Into<String>) -> OutboxError {
    OutboxError {
        message: message.into(),
        permanent: true,
    }
}

fn transient(message: impl Into<String>) -> OutboxError {
    OutboxError {
        message: message.into(),
        permanent: false,
    }
}

impl Outbox for Notifier {
    fn send<'a>(
        &'a self,
        n: &'a Notification,
        rec: &'a SessionRecord,
        detail: &'a SessionDetail,
    ) -> Pin<Box<dyn Future<Output = Result<(), OutboxError>> + Send + 'a>> {
        Box::pin(async move {
            let kind = n.kind;
            if kind.is_callback() {
                return Err(permanent(format!("{kind} is a callback, not a message")));
            }
            let facts: Value = serde_json::from_str(&n.body).unwrap_or_default();
            let error = facts.get("error").and_then(Value::as_str);
            // An alert is about the dispute as it was when it was queued.
            let mut rec = rec.clone();
            if let Some(d) = facts
                .get("dispute")
                .and_then(|d| serde_json::from_value(d.clone()).ok())
            {
                rec.dispute = Some(d);
            }
            let rec = &rec;
            if kind.is_alert() {
                return self
                    .send_alert(email::alert_text(kind, rec, error, &self.links()))
                    .await;
            }
            let Some(to) = &n.recipient else {
                return Err(permanent("no recipient"));
            };
            let mail = email::render(kind, rec, detail, error, &self.links());
            self.send_email(n, to, mail).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_smtp_url_builds_a_transport() {
        for good in [
            "smtps://user:p%40ss@smtp.example.com:465",
            "smtp://user:pass@smtp.example.com:587",
            "smtp://smtp.example.com?tls=opportunistic",
            "smtp://127.0.0.1:2525?tls=none",
            "smtp://[::1]:2525?tls=none",
        ] {
            let url: SmtpUrl = good.parse().unwrap();
            assert!(smtp_transport(&url).is_ok(), "{good}");
        }
    }
}
