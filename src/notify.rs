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
    shop_name: Option<String>,
    shop_url: Option<String>,
    /// `shop.support_email`: the `Reply-To` of customer emails.
    support: Option<Mailbox>,
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
            // The shop's name is the sender's name customers see.
            (Some(_), Some(f)) => Some(match &config.shop.name {
                Some(name) => Mailbox::new(Some(name.clone()), f.email.clone()),
                None => f.clone(),
            }),
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
                shop_name: config.shop.name.clone(),
                shop_url: config.shop.url.as_ref().map(|u| u.as_str().to_string()),
                support: config.shop.support_email.clone(),
            },
            channels,
        )))
    }

    fn links(&self) -> Links<'_> {
        Links {
            public_url: &self.public_url,
            retry_url: self.retry_url.as_deref(),
            shop_name: self.shop_name.as_deref(),
            shop_url: self.shop_url.as_deref(),
            support_email: self.support.as_ref().map(|m| m.email.as_ref()),
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
        let mut builder = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(mail.subject)
            // Stable across retries, so a receiving server can drop a duplicate.
            .message_id(Some(format!("<{}@{}>", n.id, self.domain)))
            .date_now();
        if is_customer_email(n.kind) {
            // A customer who answers reaches the shop, not the sending address.
            if let Some(support) = &self.support {
                builder = builder.reply_to(support.clone());
            }
        } else {
            // RFC 3834: a machine wrote this; no vacation reply should answer it.
            builder = builder.header(AutoSubmitted);
        }
        let message = builder
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

/// Emails to the customer (the rest go to the merchant).
fn is_customer_email(kind: crate::model::NotificationKind) -> bool {
    matches!(
        kind,
        crate::model::NotificationKind::ReceiptEmail
            | crate::model::NotificationKind::PaymentFailedEmail
    )
}

/// `Auto-Submitted: auto-generated` (RFC 3834), on the merchant's alerts.
#[derive(Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// Why a test email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TestEmailError {
    #[error("{0}")]
    Setup(String),
    #[error("the SMTP server refused it: {0}")]
    Refused(String),
}

impl TestEmailError {
    /// The configuration, not the server, is the problem.
    pub fn is_setup(&self) -> bool {
        matches!(self, TestEmailError::Setup(_))
    }
}

/// Sends one test message to `to` as configured (`smtp.*`, `shop.*`);
/// returns the server's answer (`250 2.0.0 Ok: queued as …`).
pub async fn send_test_email(config: &Config, to: &str) -> Result<String, TestEmailError> {
    let Some(url) = &config.smtp.url else {
        return Err(TestEmailError::Setup("smtp.url is not set".into()));
    };
    let Some(from) = &config.smtp.from else {
        return Err(TestEmailError::Setup("smtp.from is not set".into()));
    };
    let transport =
        smtp_transport(url.expose()).map_err(|e| TestEmailError::Setup(e.to_string()))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| TestEmailError::Setup(format!("{to} is not an email address: {e}")))?;
    let from = match &config.shop.name {
        Some(name) => Mailbox::new(Some(name.clone()), from.email.clone()),
        None => from.clone(),
    };
    let text = format!(
        "This is a test message from fulfilld {}.\n\nIf you can read it, email from fulfilld reaches {}: receipts, failed-payment notices and alerts will too.\n",
        env!("CARGO_PKG_VERSION"),
        to.email
    );
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject("fulfilld test email")
        .date_now()
        .header(AutoSubmitted);
    if let Some(support) = &config.shop.support_email {
        builder = builder.reply_to(support.clone());
    }
    let message = builder
        .singlepart(lettre::message::SinglePart::plain(text))
        .map_err(|e| TestEmailError::Setup(format!("cannot build the message: {e}")))?;
    match tokio::time::timeout(Duration::from_secs(60), transport.send(message)).await {
        Ok(Ok(answer)) => Ok(format!(
            "{} {}",
            answer.code(),
            answer.message().collect::<Vec<_>>().join(" ")
        )),
        Ok(Err(e)) => Err(TestEmailError::Refused(e.to_string())),
        Err(_) => Err(TestEmailError::Refused("no answer within 60 s".into())),
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
