//! The HTTP layer's one error type and how it reaches the client.
//!
//! Guarantees:
//! - a 4xx carries a short public message, always a `&'static str`, so no
//!   input and no internal detail can be echoed by construction;
//! - a 5xx tells the client only a fixed, opaque sentence ("database
//!   unavailable", "try again"), while its cause chain (every
//!   `std::error::Error::source`) is logged once, at the moment the error is
//!   turned into a response, inside the request's span;
//! - JSON routes answer `{"error": {"message": …}}` (CONTRACT.md "The JSON
//!   API"); dashboard form posts answer plain text ([`AsText`]); pages render
//!   their own templates through [`HttpError::render`].

use std::error::Error as StdError;

use poem::{
    Response,
    error::ResponseError,
    http::{HeaderValue, StatusCode, header},
};

use super::dto::ErrorBody;
use crate::report::chain;

/// Any error that caused a 5xx, kept for the log.
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 400: the request itself is wrong.
    #[error("{0}")]
    BadRequest(&'static str),
    /// 401 with `WWW-Authenticate: Bearer` (the JSON API).
    #[error("authentication required")]
    Unauthenticated,
    /// 403 for a state-changing form posted without a login.
    #[error("sign in first")]
    NotSignedIn,
    /// 303 to the login page (`login` is the local URL, with `next`).
    #[error("sign in first")]
    SignIn { login: String },
    /// 403: signed in (or not needed), but this request is refused.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 503: a dependency (the database, Stripe) did not answer; retrying may help.
    #[error("{context}")]
    Unavailable {
        /// What the client is told.
        public: &'static str,
        /// What the log says happened (the message of the log line).
        context: &'static str,
        #[source]
        source: Option<Cause>,
    },
    /// 500: a bug or a crashed task.
    #[error("{context}")]
    Internal {
        public: &'static str,
        context: &'static str,
        #[source]
        source: Cause,
    },
}

impl HttpError {
    /// The database could not be read or written.
    pub fn store(context: &'static str, source: impl Into<Cause>) -> Self {
        HttpError::Unavailable {
            public: "database unavailable",
            context,
            source: Some(source.into()),
        }
    }

    pub fn unavailable(public: &'static str, context: &'static str, source: Option<Cause>) -> Self {
        HttpError::Unavailable {
            public,
            context,
            source,
        }
    }

    pub fn internal(public: &'static str, context: &'static str, source: impl Into<Cause>) -> Self {
        HttpError::Internal {
            public,
            context,
            source: source.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthenticated => StatusCode::UNAUTHORIZED,
            HttpError::NotSignedIn | HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::SignIn { .. } => StatusCode::SEE_OTHER,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client may read: the 4xx reason, or the fixed 5xx sentence.
    pub fn public_message(&self) -> &'static str {
        match self {
            HttpError::BadRequest(m) | HttpError::Forbidden(m) | HttpError::NotFound(m) => m,
            HttpError::Unauthenticated => "authentication required",
            HttpError::NotSignedIn | HttpError::SignIn { .. } => "sign in first",
            HttpError::Unavailable { public, .. } | HttpError::Internal { public, .. } => public,
        }
    }

    /// Logs a 5xx with its cause chain. Called only by the renderers below,
    /// each of which turns one error into one response.
    fn log(&self) {
        let status = self.status();
        if !status.is_server_error() {
            return;
        }
        let (context, chain) = match self {
            HttpError::Unavailable {
                context, source, ..
            } => (*context, source.as_deref().map(|e| chain(e))),
            HttpError::Internal {
                context, source, ..
            } => (*context, Some(chain(source.as_ref()))),
            _ => return,
        };
        let chain = chain.unwrap_or_default();
        tracing::error!(status = status.as_u16(), error = %chain, "{context}");
    }

    /// Logs a 5xx once, then lets a page template answer with the status and
    /// the public message. Consumes the error so it cannot be logged twice.
    pub fn render<R>(self, page: impl FnOnce(StatusCode, &'static str) -> R) -> R {
        self.log();
        page(self.status(), self.public_message())
    }

    fn json_response(&self) -> Response {
        self.log();
        let mut r = match self {
            HttpError::SignIn { login } => super::see_other(login),
            _ => super::json_response(self.status(), &ErrorBody::new(self.public_message())),
        };
        if matches!(self, HttpError::Unauthenticated) {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fulfilld\""),
            );
        }
        r
    }

    fn text_response(&self) -> Response {
        self.log();
        match self {
            HttpError::SignIn { login } => super::see_other(login),
            _ => super::text(self.status(), self.public_message()),
        }
    }
}

/// The JSON API's rendering (and that of anything that does not choose).
impl ResponseError for HttpError {
    fn status(&self) -> StatusCode {
        HttpError::status(self)
    }

    fn as_response(&self) -> Response {
        self.json_response()
    }
}

/// The same error answered as plain text: the dashboard's form posts.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AsText(pub HttpError);

impl ResponseError for AsText {
    fn status(&self) -> StatusCode {
        self.0.status()
    }

    fn as_response(&self) -> Response {
        self.0.text_response()
    }
}

impl From<HttpError> for AsText {
    fn from(e: HttpError) -> Self {
        AsText(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full at /secret/path")]
    struct Disk;

    #[derive(Debug, thiserror::Error)]
    #[error("commit failed")]
    struct Commit(#[source] Disk);

    async fn body(r: Response) -> (StatusCode, String) {
        let status = r.status();
        (status, r.into_body().into_string().await.unwrap())
    }

    #[tokio::test]
    async fn a_5xx_tells_the_client_nothing_of_its_cause() {
        let e = HttpError::store("cannot list sessions", Commit(Disk));
        let r = poem::Error::from(e).into_response();
        assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
        let (status, text) = body(r).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "database unavailable"}})
        );
        let e = HttpError::internal("internal error", "task panicked", Disk);
        let (status, text) = body(poem::Error::from(AsText(e)).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(text, "internal error");
        assert!(!text.contains("secret"));
    }

    #[tokio::test]
    async fn a_4xx_carries_its_public_message_as_json_or_text() {
        let (status, text) =
            body(poem::Error::from(HttpError::NotFound("no such session")).into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(text, r#"{"error":{"message":"no such session"}}"#);
        let (status, text) = body(
            poem::Error::from(AsText(HttpError::Forbidden(
                "missing or invalid csrf token",
            )))
            .into_response(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(text, "missing or invalid csrf token");
    }

    #[test]
    fn a_401_names_the_scheme_and_sign_in_redirects() {
        let r = poem::Error::from(HttpError::Unauthenticated).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers().get("www-authenticate").unwrap(),
            "Bearer realm=\"fulfilld\""
        );
        let login = "/admin/login?next=%2Fadmin%2Fwebhooks".to_string();
        let r = poem::Error::from(AsText(HttpError::SignIn {
            login: login.clone(),
        }))
        .into_response();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers().get("location").unwrap(), login.as_str());
    }

    #[test]
    fn the_cause_chain_is_walked_without_repeats() {
        assert_eq!(
            chain(&Commit(Disk)),
            "commit failed: disk full at /secret/path"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("write: {0}")]
        struct Repeats(#[source] Disk);
        assert_eq!(chain(&Repeats(Disk)), "write: disk full at /secret/path");
    }

    #[test]
    fn render_gives_pages_the_status_and_public_message() {
        let e = HttpError::unavailable("try again", "Stripe did not answer", None);
        assert_eq!(
            e.render(|s, m| (s, m)),
            (StatusCode::SERVICE_UNAVAILABLE, "try again")
        );
    }
}
