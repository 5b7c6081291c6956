//! The merchant callback: a POST signed per Standard Webhooks
//! (standardwebhooks.com). `webhook-id` is the fulfillment (or notification)
//! id, identical on every retry, so the merchant can use it as an idempotency key.

use std::time::Duration;

use crate::signature;

#[derive(Clone)]
pub struct CallbackSender {
    http: reqwest::Client,
    url: String,
    key: Vec<u8>,
}

/// A delivery that did not get a 2xx.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub status: Option<u16>,
    pub message: String,
}

impl CallbackSender {
    pub fn new(url: &str, secret: &str) -> Result<Self, DeliveryError> {
        let key = signature::standard_webhooks_key(secret).map_err(|e| DeliveryError {
            status: None,
            message: format!("fulfillment.callback_secret {e}"),
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            // A redirect is a failure, as Stripe treats them for its webhooks.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fulfilld/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError {
                status: None,
                message: e.to_string(),
            })?;
        Ok(CallbackSender {
            http,
            url: url.to_string(),
            key,
        })
    }

    /// POSTs `body` once. `Ok(status)` only for a 2xx answer.
    pub async fn send(&self, webhook_id: &str, body: &str) -> Result<u16, DeliveryError> {
        let timestamp = crate::time::now_secs();
        let sig = signature::standard_webhooks_signature(
            &self.key,
            webhook_id,
            timestamp,
            body.as_bytes(),
        );
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| DeliveryError {
                status: None,
                message: format!("merchant callback unreachable: {}", e.without_url()),
            })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(DeliveryError {
                status: Some(status),
                message: format!("merchant callback answered HTTP {status}"),
            })
        }
    }
}
