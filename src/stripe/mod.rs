//! A small typed client for the two Stripe API calls fulfillment needs:
//! retrieve a Checkout Session with its line items, and page the line items.
//!
//! Retries (jittered exponential backoff) on network errors, 409, 429, 5xx
//! and `Stripe-Should-Retry: true`; never on `Stripe-Should-Retry: false` or
//! other 4xx. Errors say whether a later attempt may succeed.

pub mod double;
pub mod links;
pub mod types;

use std::time::Duration;

use serde_json::Value;

use crate::config::Secret;
pub use types::{Event, LineItem, List, Session};

/// Attempts per API call before the error is handed to the caller (whose job
/// queue retries much later).
const ATTEMPTS: u32 = 3;
/// Pages of 100 line items fetched at most (Checkout allows far fewer items).
const MAX_PAGES: usize = 200;
/// The in-call backoff never waits longer than this.
const MAX_CALL_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe answered {status}: {message}")]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
        retryable: bool,
    },
    #[error("cannot reach the Stripe API: {0}")]
    Network(String),
    #[error("unexpected answer from the Stripe API: {0}")]
    Decode(String),
}

impl StripeError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StripeError::Api { retryable, .. } => *retryable,
            StripeError::Network(_) | StripeError::Decode(_) => true,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StripeError::Api { status: 404, .. })
    }
}

/// A session as retrieved: typed fields, plus the raw object with every line
/// item in `line_items.data` and `has_more: false`.
#[derive(Debug, Clone)]
pub struct Retrieved {
    pub session: Session,
    pub line_items: Vec<LineItem>,
    pub raw: Value,
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: Secret,
    version: String,
    retry_base: Duration,
    /// Every request's outcome and duration, for `/metrics`.
    stats: std::sync::Arc<crate::metrics::StripeStats>,
}

impl StripeClient {
    pub fn new(
        api_base: &str,
        key: Secret,
        version: &str,
        retry_base: Duration,
    ) -> Result<Self, StripeError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fulfilld/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeError::Network(e.to_string()))?;
        Ok(StripeClient {
            http,
            base: api_base.trim_end_matches('/').to_string(),
            key,
            version: version.to_string(),
            retry_base,
            stats: Default::default(),
        })
    }

    /// The counters of this client's requests.
    pub fn stats(&self) -> &std::sync::Arc<crate::metrics::StripeStats> {
        &self.stats
    }

    /// `GET /v1/checkout/sessions/{id}?expand[]=line_items`, then every further
    /// page of `GET /v1/checkout/sessions/{id}/line_items` while `has_more`.
    /// `account`: the connected account the session belongs to (Stripe
    /// Connect), sent as `Stripe-Account` on every request.
    pub async fn retrieve_session(
        &self,
        id: &str,
        account: Option<&str>,
    ) -> Result<Retrieved, StripeError> {
        self.retrieve(id, account, ATTEMPTS).await
    }

    /// `retrieve_session` with one try per request and no retry: for lookups
    /// anyone can cause (a landing page with a made-up id), whose cost must
    /// stay within a known share of the account's rate limit.
    pub async fn lookup_session(&self, id: &str) -> Result<Retrieved, StripeError> {
        self.retrieve(id, None, 1).await
    }

    async fn retrieve(
        &self,
        id: &str,
        account: Option<&str>,
        attempts: u32,
    ) -> Result<Retrieved, StripeError> {
        if account.is_some_and(|a| !types::is_account_id(a)) {
            return Err(StripeError::Api {
                status: 400,
                code: Some("invalid_account".into()),
                message: "not a connected account id".into(),
                retryable: false,
            });
        }
        if !crate::model::is_session_id(id) {
            return Err(StripeError::Api {
                status: 400,
                code: Some("invalid_id".into()),
                message: "not a Checkout Session id".into(),
                retryable: false,
            });
        }
        let url = format!(
            "{}/v1/checkout/sessions/{id}?expand%5B%5D=line_items",
            self.base
        );
        let mut raw = self.get(&url, account, attempts).await?;
        let session = Session::from_value(&raw)
            .ok_or_else(|| StripeError::Decode("the answer is not a Checkout Session".into()))?;
        if session.id != id {
            return Err(StripeError::Decode(format!(
                "asked for {id}, got {}",
                session.id
            )));
        }
        let first: List<LineItem> = raw
            .get("line_items")
            .filter(|v| v.is_object())
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|e| StripeError::Decode(format!("line_items: {e}")))?
            .unwrap_or(List {
                data: Vec::new(),
                has_more: true,
            });
        let mut items_raw: Vec<Value> = raw
            .pointer("/line_items/data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut items = first.data;
        let mut has_more = first.has_more;
        let mut pages = 0;
        while has_more {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(StripeError::Decode("line items never end".into()));
            }
            let mut page_url = format!(
                "{}/v1/checkout/sessions/{id}/line_items?limit=100",
                self.base
            );
            if let Some(last) = items.last() {
                page_url.push_str("&starting_after=");
                page_url.push_str(&last.id);
            }
            let page_raw = self.get(&page_url, account, attempts).await?;
            let page: List<LineItem> = serde_json::from_value(page_raw.clone())
                .map_err(|e| StripeError::Decode(format!("line items page: {e}")))?;
            if page.data.is_empty() && page.has_more {
                return Err(StripeError::Decode(
                    "an empty page of line items claims more".into(),
                ));
            }
            if page.data.iter().any(|i| !is_item_id(&i.id)) {
                return Err(StripeError::Decode("a line item has no valid id".into()));
            }
            items_raw.extend(
                page_raw
                    .get("data")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            items.extend(page.data);
            has_more = page.has_more;
        }
        if let Some(obj) = raw.as_object_mut() {
            let url = format!("/v1/checkout/sessions/{id}/line_items");
            obj.insert(
                "line_items".into(),
                serde_json::json!({"object": "list", "data": items_raw, "has_more": false, "url": url}),
            );
        }
        Ok(Retrieved {
            session,
            line_items: items,
            raw,
        })
    }

    /// One page (newest first) of `GET /v1/events` for the Checkout Session
    /// events fulfilld acts on that Stripe could not deliver
    /// (`delivery_success=false`), created at or after `created_gte`.
    /// Returns the raw events and whether more pages follow.
    /// One page of the events fulfilld acts on that Stripe could not
    /// deliver, on the platform or (`account`) a connected account.
    pub async fn list_undelivered_events(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
        account: Option<&str>,
    ) -> Result<(Vec<Value>, bool), StripeError> {
        if account.is_some_and(|a| !types::is_account_id(a)) {
            return Err(StripeError::Decode("not a connected account id".into()));
        }
        let mut url = format!(
            "{}/v1/events?delivery_success=false&limit=100&created%5Bgte%5D={created_gte}",
            self.base
        );
        for (i, t) in [
            types::SESSION_COMPLETED,
            types::SESSION_ASYNC_SUCCEEDED,
            types::SESSION_ASYNC_FAILED,
            types::SESSION_EXPIRED,
            "charge.refunded",
            "charge.refund.updated",
            "charge.dispute.created",
            "charge.dispute.updated",
            "charge.dispute.closed",
        ]
        .iter()
        .enumerate()
        {
            url.push_str(&format!("&types%5B{i}%5D={t}"));
        }
        if let Some(after) = starting_after {
            if !is_item_id(after) {
                return Err(StripeError::Decode("an event id is malformed".into()));
            }
            url.push_str("&starting_after=");
            url.push_str(after);
        }
        let page = self.get(&url, account, ATTEMPTS).await?;
        let data = page
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| StripeError::Decode("an events page has no data".into()))?;
        let has_more = page
            .get("has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok((data, has_more))
    }

    async fn get(
        &self,
        url: &str,
        account: Option<&str>,
        attempts: u32,
    ) -> Result<Value, StripeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.get_once(url, account).await;
            match result {
                Err(e) if e.is_retryable() && attempt < attempts => {
                    // The one retry policy, capped for waits within a call.
                    let policy = crate::domain::RetryPolicy {
                        base_ms: u64::try_from(self.retry_base.as_millis()).unwrap_or(u64::MAX),
                        max_ms: MAX_CALL_BACKOFF.as_millis() as u64,
                        give_up_ms: u64::MAX,
                    };
                    let jitter = crate::time::jitter_entropy();
                    let delay = Duration::from_millis(policy.delay_ms(attempt, jitter, u64::MAX));
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "Stripe API call failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn get_once(&self, url: &str, account: Option<&str>) -> Result<Value, StripeError> {
        let mut request = self
            .http
            .get(url)
            .bearer_auth(self.key.expose())
            .header("Stripe-Version", &self.version);
        if let Some(account) = account {
            request = request.header("Stripe-Account", account);
        }
        let started = std::time::Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.request(None, started.elapsed());
                return Err(StripeError::Network(without_url(e)));
            }
        };
        let status = response.status().as_u16();
        self.stats.request(Some(status), started.elapsed());
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v == "true");
        let body = response
            .bytes()
            .await
            .map_err(|e| StripeError::Network(without_url(e)))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| StripeError::Decode(e.to_string()));
        }
        let err: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = err
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(|m| m.chars().take(300).collect::<String>())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let code = err
            .pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_string);
        let retryable = match should_retry {
            Some(explicit) => explicit,
            None => status == 409 || status == 429 || status >= 500,
        };
        Err(StripeError::Api {
            status,
            code,
            message,
            retryable,
        })
    }
}

fn is_item_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A reqwest error without the URL (which could carry query data) in its text.
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}
