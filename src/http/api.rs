//! The JSON API under `/admin/api` (CONTRACT.md "The JSON API"), authorised
//! by `Authorization: Bearer <admin.api_token>` or a dashboard login.

use std::{sync::Arc, time::Duration};

use poem::{
    Body, Request, Response, handler,
    http::StatusCode,
    web::{Data, Path, Query},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, admin::same_origin, auth::csrf_ok, json_error, json_response};
use crate::{
    fulfill::FulfillOptions,
    model::{Notification, SessionDetail, SessionRecord, State, Trigger, is_session_id},
    store::{ListQuery, parse_cursor},
    time::{rfc3339_ms, rfc3339_secs},
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// How long the re-trigger waits for the attempt before answering 202.
const FULFILL_WAIT: Duration = Duration::from_secs(30);

/// Compares a presented token with the configured one in constant time,
/// over digests so the length does not leak either.
fn token_matches(given: &str, token: &crate::config::Secret) -> bool {
    super::auth::secret_eq(given.as_bytes(), token.expose().as_bytes())
}

/// Lets a request in with the bearer token, or with a dashboard login. A
/// state-changing call by cookie must also carry the session's CSRF token
/// in `X-CSRF-Token` (and come from the same origin). Returns who called:
/// the admin's name for a login, `api` for the token.
fn authorised(
    req: &Request,
    state: &AppState,
    changes_state: bool,
) -> Result<String, Box<Response>> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let (Some(given), Some(token)) = (bearer, &state.api_token) {
        if token_matches(given, token) {
            return Ok("api".into());
        }
        return Err(Box::new(unauthorised()));
    }
    let Some(session) = state.auth.session(req) else {
        return Err(Box::new(unauthorised()));
    };
    if changes_state {
        let token = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if !same_origin(req, &state.public_origin) || !csrf_ok(&session, token) {
            return Err(Box::new(json_error(
                StatusCode::FORBIDDEN,
                "a signed-in call that changes state needs the X-CSRF-Token header",
            )));
        }
    }
    Ok(session.username)
}

fn unauthorised() -> Response {
    let mut r = json_error(StatusCode::UNAUTHORIZED, "authentication required");
    r.headers_mut().insert(
        "www-authenticate",
        poem::http::HeaderValue::from_static("Bearer realm=\"fulfilld\""),
    );
    r
}

/// A session as the API and the dashboard show it. The list leaves out
/// `attempts` and `events`.
pub fn session_json(
    rec: &SessionRecord,
    detail: &SessionDetail,
    notifications: Option<&[Notification]>,
) -> Value {
    let full = notifications.is_some();
    let mut v = json!({
        "id": rec.id,
        "livemode": rec.livemode,
        "state": rec.state.as_str(),
        "payment_status": rec.payment_status,
        "status": rec.status,
        "amount_total": rec.amount_total,
        "currency": rec.currency,
        "customer_email": rec.customer_email,
        "payment_intent": rec.payment_intent,
        "created": rec.created,
        "created_at": rfc3339_secs(rec.created),
        "updated_at": rfc3339_ms(rec.updated_at_ms),
        "last_error": rec.last_error,
        "next_attempt_at": rec.retry.as_ref().filter(|_| rec.state == State::Retrying).map(|r| rfc3339_ms(r.next_at_ms)),
        "line_items": detail.line_items.iter().map(|i| json!({
            "id": i.id,
            "description": i.description,
            "quantity": i.quantity,
            "amount_total": i.amount_total,
            "currency": i.currency,
            "unit_amount": i.unit_amount,
            "price_id": i.price_id,
        })).collect::<Vec<_>>(),
        "fulfillments": detail.fulfillments.iter().map(|f| json!({
            "id": f.id,
            "at": rfc3339_ms(f.at_ms),
            "forced": f.forced,
            "trigger": f.trigger.as_str(),
            "actor": f.actor,
            "delivered_at": f.delivered_at_ms.map(rfc3339_ms),
        })).collect::<Vec<_>>(),
    });
    if full && let Some(obj) = v.as_object_mut() {
        obj.insert(
            "attempts".into(),
            detail
                .attempts
                .iter()
                .map(|a| json!({"at": rfc3339_ms(a.at_ms), "trigger": a.trigger.as_str(), "outcome": a.outcome, "error": a.error}))
                .collect(),
        );
        obj.insert(
            "events".into(),
            detail
                .events
                .iter()
                .map(|e| json!({"id": e.id, "type": e.kind, "received_at": rfc3339_ms(e.received_at_ms)}))
                .collect(),
        );
        obj.insert(
            "deliveries".into(),
            detail
                .deliveries
                .iter()
                .map(|d| {
                    json!({"at": rfc3339_ms(d.at_ms), "type": d.kind, "webhook_id": d.webhook_id,
                                "status_code": d.status_code, "error": d.error})
                })
                .collect(),
        );
        obj.insert(
            "notifications".into(),
            notifications
                .unwrap_or_default()
                .iter()
                .map(|n| {
                    json!({"id": n.id, "kind": n.kind, "recipient": n.recipient, "status": n.status,
                           "attempts": n.attempts, "last_error": n.last_error,
                           "created_at": (n.created_at_ms > 0).then(|| rfc3339_ms(n.created_at_ms)),
                           "sent_at": n.sent_at_ms.map(rfc3339_ms)})
                })
                .collect(),
        );
    }
    v
}

#[derive(Deserialize)]
pub struct ListParams {
    state: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[handler]
pub async fn list_sessions(
    req: &Request,
    Query(p): Query<ListParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
    if let Err(r) = authorised(req, &state, false) {
        return *r;
    }
    let state_filter = match p.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match State::parse(s) {
            Some(st) => Some(st),
            None => return json_error(StatusCode::BAD_REQUEST, "unknown state"),
        },
    };
    let cursor = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match parse_cursor(c) {
            Some(c) => Some(c),
            None => return json_error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
    };
    let query = ListQuery {
        state: state_filter,
        q: p.q.filter(|q| !q.trim().is_empty()),
        cursor,
        limit: p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
    };
    let page = state
        .fulfiller
        .store()
        .read(move |r| {
            let page = r.list(&query)?;
            let rows = page
                .sessions
                .iter()
                .map(|s| Ok(session_json(s, &r.detail(&s.id)?, None)))
                .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
            Ok((rows, page.next_cursor))
        })
        .await;
    match page {
        Ok((data, next)) => {
            json_response(StatusCode::OK, &json!({"data": data, "next_cursor": next}))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot list sessions");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

type Loaded = (SessionRecord, SessionDetail, Vec<Notification>);

async fn load(state: &AppState, id: &str) -> Result<Option<Loaded>, Response> {
    let id = id.to_string();
    state
        .fulfiller
        .store()
        .read(move |r| match r.session(&id)? {
            Some(rec) => {
                let detail = r.detail(&id)?;
                let notifications = r.session_notifications(&detail)?;
                Ok(Some((rec, detail, notifications)))
            }
            None => Ok(None),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read session");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        })
}

#[handler]
pub async fn get_session(
    req: &Request,
    Path(id): Path<String>,
    state: Data<&Arc<AppState>>,
) -> Response {
    if let Err(r) = authorised(req, &state, false) {
        return *r;
    }
    if !is_session_id(&id) {
        return json_error(StatusCode::NOT_FOUND, "no such session");
    }
    match load(&state, &id).await {
        Ok(Some((rec, detail, notifications))) => json_response(
            StatusCode::OK,
            &session_json(&rec, &detail, Some(&notifications)),
        ),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "no such session"),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
struct FulfillBody {
    #[serde(default)]
    force: bool,
}

#[handler]
pub async fn fulfill_session(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    state: Data<&Arc<AppState>>,
) -> Response {
    let actor = match authorised(req, &state, true) {
        Ok(who) => who,
        Err(r) => return *r,
    };
    let raw = match body.into_bytes_limit(64 * 1024).await {
        Ok(b) => b,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "cannot read body"),
    };
    let wish: FulfillBody = if raw.iter().all(u8::is_ascii_whitespace) {
        FulfillBody::default()
    } else {
        match serde_json::from_slice(&raw) {
            Ok(b) => b,
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "body must be JSON like {\"force\": true}",
                );
            }
        }
    };
    if !is_session_id(&id) {
        return json_error(StatusCode::NOT_FOUND, "no such session");
    }
    match load(&state, &id).await {
        Ok(Some(_)) => {}
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "no such session"),
        Err(r) => return r,
    }
    let task = {
        let (fulfiller, id) = (state.fulfiller.clone(), id.clone());
        tokio::spawn(async move {
            let opts = FulfillOptions {
                force: wish.force,
                actor: Some(actor),
                prefetched: None,
            };
            fulfiller.fulfill_checkout(&id, Trigger::Admin, opts).await
        })
    };
    let (status, result) = match tokio::time::timeout(FULFILL_WAIT, task).await {
        Ok(Ok(Ok(outcome))) => (
            StatusCode::OK,
            json!({"state": outcome.state.as_str(), "fulfillment_id": outcome.fulfillment_id, "error": outcome.error}),
        ),
        Ok(Ok(Err(e))) => {
            tracing::error!(session = %id, error = %e, "re-trigger failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not record the attempt",
            );
        }
        Ok(Err(_)) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the attempt stopped unexpectedly",
            );
        }
        Err(_) => (
            StatusCode::ACCEPTED,
            json!({"state": "fulfilling", "pending": true}),
        ),
    };
    match load(&state, &id).await {
        Ok(Some((rec, detail, notifications))) => json_response(
            status,
            &json!({"result": result, "session": session_json(&rec, &detail, Some(&notifications))}),
        ),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "no such session"),
        Err(r) => r,
    }
}

/// The API token, or the per-boot local token that only a user who can
/// read the database's directory has.
fn backup_allowed(req: &Request, state: &AppState) -> bool {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    let local = header("x-fulfilld-local-token");
    matches!((bearer, &state.api_token), (Some(g), Some(t)) if token_matches(g, t))
        || matches!((local, &state.local_token), (Some(g), Some(t)) if token_matches(g, t))
}

#[derive(Deserialize)]
struct BackupBody {
    path: String,
}

/// `POST /admin/api/backup {"path": "/data/backup.redb"}`: what
/// `fulfilld backup PATH` asks a running server to do. Token only (never
/// the cookie: it writes a file on the server), and only into the
/// database's own directory, as a new file.
#[handler]
pub async fn backup(req: &Request, body: Body, state: Data<&Arc<AppState>>) -> Response {
    if !backup_allowed(req, &state) {
        return unauthorised();
    }
    let raw = match body.into_bytes_limit(16 * 1024).await {
        Ok(b) => b,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "cannot read body"),
    };
    let Ok(wish) = serde_json::from_slice::<BackupBody>(&raw) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON like {\"path\": \"/data/backup.redb\"}",
        );
    };
    let path = std::path::PathBuf::from(&wish.path);
    let dir = state.db_path.parent().and_then(|d| d.canonicalize().ok());
    let target_dir = path.parent().and_then(|d| d.canonicalize().ok());
    let name_ok = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".redb"));
    if !path.is_absolute() || dir.is_none() || dir != target_dir || !name_ok {
        return json_error(
            StatusCode::BAD_REQUEST,
            "a running server writes backups only into its database's directory, as a new NAME.redb file; stop the server to copy anywhere else",
        );
    }
    match state.fulfiller.store().backup(&path).await {
        Ok(stats) => {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            tracing::info!(path = %path.display(), sessions = stats.sessions, events = stats.events, "backup written");
            json_response(
                StatusCode::OK,
                &json!({"path": wish.path, "sessions": stats.sessions, "events": stats.events, "bytes": bytes}),
            )
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "backup failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("backup failed: {e}"),
            )
        }
    }
}
