//! The JSON API under `/admin/api` (CONTRACT.md "The JSON API"), authorised
//! by `Authorization: Bearer <admin.api_token>` or a dashboard login
//! ([`ApiCaller`]). Every answer, errors included, is JSON; the shapes are
//! the types in `dto`.

use std::{sync::Arc, time::Duration};

use poem::{
    Body, Request, Response, handler,
    http::StatusCode,
    web::{Data, Path, Query},
};
use serde::Deserialize;

use super::{
    AppState,
    auth::secret_eq,
    client::client_addr,
    dto::{BackupJson, FulfillResponse, FulfillResult, SessionJson, SessionList},
    error::HttpError,
    extract::{ApiCaller, bearer, too_many_tokens},
    json_response,
    retrigger::{Retriggered, Wish, retrigger},
};
use crate::{
    fulfill::Outcome,
    model::{Notification, RefundStatus, SessionDetail, SessionId, SessionRecord, State},
    store::{ListQuery, parse_cursor},
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// How long the re-trigger waits for the attempt before answering 202.
const FULFILL_WAIT: Duration = Duration::from_secs(30);
/// The largest JSON body a call takes.
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct ListParams {
    state: Option<String>,
    refund_status: Option<String>,
    disputed: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

impl ListParams {
    /// The list query these parameters ask for; `400` naming a bad one.
    pub fn query(self, default_limit: usize, max_limit: usize) -> Result<ListQuery, HttpError> {
        let state = match self.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(State::parse(s).ok_or(HttpError::BadRequest("unknown state"))?),
        };
        let cursor = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(parse_cursor(c).ok_or(HttpError::BadRequest("invalid cursor"))?),
        };
        let refund_status = match self.refund_status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                Some(RefundStatus::parse(s).ok_or(HttpError::BadRequest("unknown refund_status"))?)
            }
        };
        let disputed = match self.disputed.as_deref() {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(_) => return Err(HttpError::BadRequest("disputed takes true or false")),
        };
        Ok(ListQuery {
            state,
            refund_status,
            disputed,
            q: self.q.filter(|q| !q.trim().is_empty()),
            cursor,
            limit: self.limit.unwrap_or(default_limit).clamp(1, max_limit),
        })
    }
}

#[handler]
pub async fn list_sessions(
    _caller: ApiCaller,
    Query(p): Query<ListParams>,
    state: Data<&Arc<AppState>>,
) -> Result<Response, HttpError> {
    let query = p.query(DEFAULT_LIMIT, MAX_LIMIT)?;
    let (rows, next_cursor) = list(&state, query).await?;
    let data = rows
        .iter()
        .map(|(rec, detail)| SessionJson::summary(rec, detail))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &SessionList { data, next_cursor },
    ))
}

type Rows = (Vec<(SessionRecord, SessionDetail)>, Option<String>);

/// One page of sessions with their details, from one snapshot.
async fn list(state: &AppState, query: ListQuery) -> Result<Rows, HttpError> {
    let page = state
        .fulfiller
        .store()
        .list_full(query)
        .await
        .map_err(|e| HttpError::store("cannot list sessions", e))?;
    let rows = page
        .sessions
        .into_iter()
        .map(|s| (s.rec, s.detail))
        .collect();
    Ok((rows, page.next_cursor))
}

type Loaded = (SessionRecord, SessionDetail, Vec<Notification>);

/// A session with its timeline, from one snapshot; `NotFound` if unknown.
async fn load(state: &AppState, id: &str) -> Result<Loaded, HttpError> {
    let Some(id) = SessionId::parse(id) else {
        return Err(HttpError::NotFound("no such session"));
    };
    state
        .fulfiller
        .store()
        .session_view(&id)
        .await
        .map_err(|e| HttpError::store("cannot read session", e))?
        .map(|v| (v.session.rec, v.session.detail, v.notifications))
        .ok_or(HttpError::NotFound("no such session"))
}

#[handler]
pub async fn get_session(
    _caller: ApiCaller,
    Path(id): Path<String>,
    state: Data<&Arc<AppState>>,
) -> Result<Response, HttpError> {
    let (rec, detail, notifications) = load(&state, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &SessionJson::full(&rec, &detail, &notifications),
    ))
}

/// `{"force": true}` records a new, forced fulfillment. With
/// `"expect_fulfillments": n` it forces only if the session still has
/// exactly `n` fulfillments (idempotency: a retried request makes one);
/// otherwise it answers `200` with `"fulfillment_id": null`, nothing done.
/// `expect_fulfillments` without `force` changes nothing.
#[derive(Deserialize, Default)]
struct FulfillBody {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    expect_fulfillments: Option<u32>,
}

/// A JSON body of at most `limit` bytes; `T::default()` when empty.
async fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    limit: usize,
    shape: &'static str,
) -> Result<T, HttpError> {
    let raw = body
        .into_bytes_limit(limit)
        .await
        .map_err(|_| HttpError::BadRequest("cannot read body"))?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&raw).map_err(|_| HttpError::BadRequest(shape))
}

#[handler]
pub async fn fulfill_session(
    ApiCaller { actor }: ApiCaller,
    Path(id): Path<String>,
    body: Body,
    state: Data<&Arc<AppState>>,
) -> Result<Response, HttpError> {
    let wish: FulfillBody =
        json_body(body, MAX_BODY, "body must be JSON like {\"force\": true}").await?;
    let wish = if wish.force {
        Wish::Force {
            expect: wish.expect_fulfillments,
        }
    } else {
        Wish::Fulfil
    };
    let (status, done) = match retrigger(&state, &id, wish, actor, FULFILL_WAIT).await? {
        Retriggered::Done(outcome) => (StatusCode::OK, Some(outcome)),
        // Already made by an earlier call with the same expectation.
        Retriggered::AlreadyDone(now) => (
            StatusCode::OK,
            Some(Outcome {
                state: now,
                fulfillment_id: None,
                error: None,
                attempted: false,
            }),
        ),
        Retriggered::Pending => (StatusCode::ACCEPTED, None),
        Retriggered::Failed(e) => return Err(e),
    };
    let (rec, detail, notifications) = load(&state, &id).await?;
    let result = done
        .as_ref()
        .map_or_else(FulfillResult::pending, FulfillResult::done);
    Ok(json_response(
        status,
        &FulfillResponse {
            result,
            session: SessionJson::full(&rec, &detail, &notifications),
        },
    ))
}

/// `None` when the request carries the API token or the per-boot local
/// token (that only a user who can read the database's directory has),
/// else the refusal to send. Never the cookie: a backup writes a file on
/// the server.
fn backup_refusal(req: &Request, state: &AppState) -> Option<Response> {
    let local = req
        .headers()
        .get("x-fulfilld-local-token")
        .and_then(|v| v.to_str().ok());
    let matches = |given: Option<&str>, secret: &Option<crate::config::Secret>| matches!((given, secret), (Some(g), Some(t)) if secret_eq(g.as_bytes(), t.expose().as_bytes()));
    if matches(bearer(req), &state.api_token) || matches(local, &state.local_token) {
        return None;
    }
    // Counted with the API's other wrong tokens, by client address.
    match state.auth.api_token_failed(client_addr(req, state)) {
        Some(wait) => Some(too_many_tokens(wait)),
        None => Some(poem::error::ResponseError::as_response(
            &HttpError::Unauthenticated,
        )),
    }
}

#[derive(Deserialize)]
struct BackupBody {
    path: String,
}

/// `POST /admin/api/backup {"path": "/data/backup.redb"}`: what
/// `fulfilld backup PATH` asks a running server to do. Only into the
/// database's own directory, as a new file.
#[handler]
pub async fn backup(
    req: &Request,
    body: Body,
    state: Data<&Arc<AppState>>,
) -> Result<Response, HttpError> {
    if let Some(refused) = backup_refusal(req, &state) {
        return Ok(refused);
    }
    let raw = body
        .into_bytes_limit(16 * 1024)
        .await
        .map_err(|_| HttpError::BadRequest("cannot read body"))?;
    let wish = serde_json::from_slice::<BackupBody>(&raw).map_err(|_| {
        HttpError::BadRequest("body must be JSON like {\"path\": \"/data/backup.redb\"}")
    })?;
    let path = std::path::PathBuf::from(&wish.path);
    let dir = state.db_path.parent().and_then(|d| d.canonicalize().ok());
    let target_dir = path.parent().and_then(|d| d.canonicalize().ok());
    let name_ok = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".redb"));
    if !path.is_absolute() || dir.is_none() || dir != target_dir || !name_ok {
        return Err(HttpError::BadRequest(
            "a running server writes backups only into its database's directory, as a new NAME.redb file; stop the server to copy anywhere else",
        ));
    }
    // Checked here so the operator is told (a 5xx says nothing); the store
    // refuses to overwrite a file that appears in between.
    if path.exists() {
        return Err(HttpError::BadRequest(
            "the backup file already exists; choose a new file name",
        ));
    }
    let stats = state
        .fulfiller
        .store()
        .backup(&path)
        .await
        .map_err(|e| HttpError::internal("backup failed", "backup failed", e))?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(path = %path.display(), sessions = stats.sessions, events = stats.events, "backup written");
    Ok(json_response(
        StatusCode::OK,
        &BackupJson {
            path: &wish.path,
            sessions: stats.sessions,
            events: stats.events,
            bytes,
        },
    ))
}
