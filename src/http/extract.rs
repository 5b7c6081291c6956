//! Who may call what: poem extractors for the dashboard and the JSON API.
//!
//! - [`SignedIn`]: a dashboard login (cookie); without one, a 303 to
//!   `/admin/login` that returns here afterwards.
//! - [`CsrfChecked`]: a state-changing dashboard form: a login, a same-site
//!   `Origin`, and the session's CSRF token in the form's `csrf` field; 403
//!   otherwise.
//! - [`ApiCaller`]: `Authorization: Bearer <admin.api_token>`, or a login;
//!   a login that changes state (any method but GET, HEAD, OPTIONS, TRACE) needs
//!   the session's CSRF token in `X-CSRF-Token` and a same-site `Origin`.
//!   Wrong tokens are counted per client address ([`AdminAuth::api_token_failed`]):
//!   past the limit they get 429 with `Retry-After`.
//!
//! Every token comparison is constant-time ([`super::auth::secret_eq`]).

use std::{net::IpAddr, sync::Arc, time::Duration};

use poem::{
    FromRequest, Request, RequestBody,
    http::{StatusCode, header},
    web::Form,
};
use serde::de::DeserializeOwned;

use super::{
    AppState,
    auth::{AdminAuth, AdminSession, csrf_ok, secret_eq},
    client::client_addr,
    dto::ErrorBody,
    error::{AsText, HttpError},
    json_response,
};
use crate::{config::Secret, views::admin::enc};

/// What the checks need from the application state (borrowed, so the checks
/// can be tested without a running application).
pub(crate) struct Gate<'a> {
    pub auth: &'a AdminAuth,
    pub api_token: Option<&'a Secret>,
    pub public_origin: &'a str,
}

impl AppState {
    pub(crate) fn gate(&self) -> Gate<'_> {
        Gate {
            auth: &self.auth,
            api_token: self.api_token.as_ref(),
            public_origin: &self.public_origin,
        }
    }
}

fn app_state(req: &Request) -> Result<&Arc<AppState>, HttpError> {
    req.data::<Arc<AppState>>().ok_or_else(|| {
        HttpError::internal(
            "internal error",
            "the application state is not attached to this route",
            "missing AppState",
        )
    })
}

/// A local dashboard path to return to after login; anything else is dropped
/// (no open redirects).
pub(crate) fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| {
        n.starts_with("/admin")
            && !n.starts_with("/admin/login")
            && !n.starts_with("/admin/logout")
            && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    })
}

/// A request whose `Origin` names another site is refused even with a valid
/// token: browsers send `Origin` on every cross-site POST. Same site means
/// the `Host` the request came to, or `server.public_url` (behind a proxy
/// that rewrites `Host`).
pub(crate) fn same_origin(req: &Request, public_origin: &str) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin.eq_ignore_ascii_case(public_origin) {
        return true;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    // The host may match, but the scheme must be the public one too: a page
    // served over plain http (say, by someone on the network path) is not
    // the https dashboard's origin.
    let scheme = public_origin.split_once("://").map(|(s, _)| s);
    match (origin.split_once("://"), scheme, host) {
        (Some((o_scheme, o_host)), Some(scheme), Some(h)) => {
            o_scheme.eq_ignore_ascii_case(scheme) && o_host.eq_ignore_ascii_case(h)
        }
        _ => false,
    }
}

/// The login page, returning to this request's page afterwards.
fn login_location(req: &Request) -> String {
    let here = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/admin");
    match safe_next(Some(here)) {
        Some(next) if next != "/admin" => format!("/admin/login?next={}", enc(next)),
        _ => "/admin/login".to_string(),
    }
}

/// The bearer token of a request, if it sends one.
pub(crate) fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl Gate<'_> {
    async fn signed_in(&self, req: &Request) -> Result<AdminSession, HttpError> {
        self.auth
            .session(req)
            .await
            .ok_or_else(|| HttpError::SignIn {
                login: login_location(req),
            })
    }

    /// A login, a same-site request, and the session's CSRF token.
    pub(crate) async fn csrf_checked(
        &self,
        req: &Request,
        csrf: Option<&str>,
    ) -> Result<AdminSession, HttpError> {
        let s = self.auth.session(req).await.ok_or(HttpError::NotSignedIn)?;
        if !(same_origin(req, self.public_origin) && csrf_ok(&s, csrf)) {
            return Err(HttpError::Forbidden("missing or invalid csrf token"));
        }
        Ok(s)
    }

    /// Who called the API from `client`: `api` for the token, the admin's
    /// name for a login.
    async fn api_caller(&self, req: &Request, client: IpAddr) -> Result<String, ApiDenied> {
        if let (Some(given), Some(token)) = (bearer(req), self.api_token) {
            // A wrong token is refused even if a cookie would have passed.
            if secret_eq(given.as_bytes(), token.expose().as_bytes()) {
                return Ok("api".into());
            }
            return Err(match self.auth.api_token_failed(client) {
                Some(wait) => ApiDenied::Throttled(wait),
                None => ApiDenied::Http(HttpError::Unauthenticated),
            });
        }
        let session = self
            .auth
            .session(req)
            .await
            .ok_or(HttpError::Unauthenticated)?;
        if !req.method().is_safe() {
            let token = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            if !same_origin(req, self.public_origin) || !csrf_ok(&session, token) {
                return Err(HttpError::Forbidden(
                    "a signed-in call that changes state needs the X-CSRF-Token header",
                )
                .into());
            }
        }
        Ok(session.username)
    }
}

/// The signed-in admin of a dashboard page.
pub struct SignedIn(pub AdminSession);

impl<'a> FromRequest<'a> for SignedIn {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = app_state(req).map_err(AsText)?;
        Ok(SignedIn(state.gate().signed_in(req).await.map_err(AsText)?))
    }
}

/// A form that carries the dashboard's CSRF token.
pub trait CsrfForm {
    fn csrf(&self) -> Option<&str>;
}

/// A state-changing dashboard form, checked: the admin who sent it and the
/// form. Refusals are plain-text 403s.
pub struct CsrfChecked<F> {
    pub admin: AdminSession,
    pub form: F,
}

impl<'a, F: DeserializeOwned + CsrfForm + Send> FromRequest<'a> for CsrfChecked<F> {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        // The form is parsed first, as the handlers did before the extractor.
        let Form(form) = Form::<F>::from_request(req, body).await?;
        let state = app_state(req).map_err(AsText)?;
        let admin = state
            .gate()
            .csrf_checked(req, form.csrf())
            .await
            .map_err(AsText)?;
        Ok(CsrfChecked { admin, form })
    }
}

/// Who called the JSON API (refusals are JSON 401/403).
pub struct ApiCaller {
    /// `api` for the bearer token, else the signed-in admin's name.
    pub actor: String,
}

impl<'a> FromRequest<'a> for ApiCaller {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = app_state(req)?;
        let actor = state
            .gate()
            .api_caller(req, client_addr(req, state))
            .await?;
        Ok(ApiCaller { actor })
    }
}

/// Why the API refused a caller.
#[derive(Debug)]
pub(crate) enum ApiDenied {
    Http(HttpError),
    /// Too many wrong tokens from this address: 429 with `Retry-After`.
    Throttled(Duration),
}

impl From<HttpError> for ApiDenied {
    fn from(e: HttpError) -> Self {
        ApiDenied::Http(e)
    }
}

impl From<ApiDenied> for poem::Error {
    fn from(d: ApiDenied) -> Self {
        match d {
            ApiDenied::Http(e) => e.into(),
            ApiDenied::Throttled(wait) => poem::Error::from_response(too_many_tokens(wait)),
        }
    }
}

/// The JSON 429 for an address that sent too many wrong API tokens.
pub(crate) fn too_many_tokens(wait: Duration) -> poem::Response {
    let mut r = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &ErrorBody::new("too many wrong API tokens from this address; retry later"),
    );
    if let Ok(v) = (wait.as_secs() + 1).to_string().parse() {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod origin_tests {
    use super::same_origin;

    fn post(origin: &str, host: &str) -> poem::Request {
        poem::Request::builder()
            .header("origin", origin)
            .header("host", host)
            .finish()
    }

    #[test]
    fn the_origin_must_match_the_host_and_the_public_scheme() {
        let public = "https://shop.example.com";
        assert!(same_origin(
            &post("https://shop.example.com", "internal:4242"),
            public
        ));
        assert!(same_origin(
            &post("https://fulfilld.local", "fulfilld.local"),
            public
        ));
        assert!(!same_origin(
            &post("http://fulfilld.local", "fulfilld.local"),
            public
        ));
        assert!(!same_origin(
            &post("https://evil.example", "fulfilld.local"),
            public
        ));
        assert!(!same_origin(&post("null", "fulfilld.local"), public));
        let plain = "http://localhost:4242";
        assert!(same_origin(
            &post("http://127.0.0.1:4242", "127.0.0.1:4242"),
            plain
        ));
        assert!(!same_origin(
            &post("https://127.0.0.1:4242", "127.0.0.1:4242"),
            plain
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::{COOKIE, LoginResult};
    use poem::http::{Method, StatusCode};

    fn auth() -> AdminAuth {
        AdminAuth::new(Some("admin"), Some(&Secret::new("pw")), None, false).unwrap()
    }

    async fn cookie(a: &AdminAuth) -> String {
        let LoginResult::Ok { session: token, .. } = a.login(None, None, "admin", "pw").await
        else {
            panic!("signs in");
        };
        format!("{COOKIE}={token}")
    }

    fn peer() -> IpAddr {
        "192.0.2.200".parse().unwrap()
    }

    fn gate<'a>(a: &'a AdminAuth, token: Option<&'a Secret>) -> Gate<'a> {
        Gate {
            auth: a,
            api_token: token,
            public_origin: "https://orders.example.com",
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder()
            .method(method)
            .uri(poem::http::Uri::from_static("/admin/sessions/cs_1?x=1"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.finish()
    }

    #[tokio::test]
    async fn pages_without_a_login_redirect_to_the_login_page() {
        let a = auth();
        let e = gate(&a, None)
            .signed_in(&request(Method::GET, &[]))
            .await
            .unwrap_err();
        let HttpError::SignIn { login } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(
            login,
            "/admin/login?next=%2Fadmin%2Fsessions%2Fcs_1%3Fx%3D1"
        );
        let c = cookie(&a).await;
        let s = gate(&a, None)
            .signed_in(&request(Method::GET, &[("cookie", &c)]))
            .await
            .unwrap();
        assert_eq!(s.username, "admin");
    }

    #[tokio::test]
    async fn forms_need_a_login_the_csrf_token_and_the_same_site() {
        let a = auth();
        let g = gate(&a, None);
        let c = cookie(&a).await;
        let csrf = g
            .signed_in(&request(Method::POST, &[("cookie", &c)]))
            .await
            .unwrap()
            .csrf;
        let no_login = g
            .csrf_checked(&request(Method::POST, &[]), Some(&csrf))
            .await;
        assert!(matches!(no_login, Err(HttpError::NotSignedIn)));
        let post = request(Method::POST, &[("cookie", &c)]);
        for bad in [None, Some(""), Some("forged")] {
            let e = g.csrf_checked(&post, bad).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::FORBIDDEN);
        }
        let cross_site = request(
            Method::POST,
            &[
                ("cookie", &c),
                ("origin", "https://evil.test"),
                ("host", "orders.example.com"),
            ],
        );
        assert!(g.csrf_checked(&cross_site, Some(&csrf)).await.is_err());
        let same_site = request(
            Method::POST,
            &[("cookie", &c), ("origin", "https://orders.example.com")],
        );
        assert!(g.csrf_checked(&same_site, Some(&csrf)).await.is_ok());
    }

    #[tokio::test]
    async fn the_api_takes_the_token_or_a_login_with_csrf_for_changes() {
        let a = auth();
        let token = Secret::new("tok_123");
        let g = gate(&a, Some(&token));
        let ok = g
            .api_caller(
                &request(Method::POST, &[("authorization", "Bearer tok_123")]),
                peer(),
            )
            .await;
        assert_eq!(ok.unwrap(), "api");
        for refused in [
            request(Method::GET, &[("authorization", "Bearer tok_12")]),
            request(Method::GET, &[("authorization", "Bearer ")]),
            request(Method::GET, &[]),
        ] {
            assert!(matches!(
                g.api_caller(&refused, peer()).await,
                Err(ApiDenied::Http(HttpError::Unauthenticated))
            ));
        }
        let c = cookie(&a).await;
        let s = a
            .session(&request(Method::GET, &[("cookie", &c)]))
            .await
            .unwrap();
        assert_eq!(
            g.api_caller(&request(Method::GET, &[("cookie", &c)]), peer())
                .await
                .unwrap(),
            "admin"
        );
        let e = g
            .api_caller(&request(Method::POST, &[("cookie", &c)]), peer())
            .await
            .unwrap_err();
        assert!(matches!(e, ApiDenied::Http(e) if e.status() == StatusCode::FORBIDDEN));
        let with_csrf = request(Method::POST, &[("cookie", &c), ("x-csrf-token", &s.csrf)]);
        assert_eq!(g.api_caller(&with_csrf, peer()).await.unwrap(), "admin");
        // A wrong bearer token is not rescued by a valid cookie.
        let both = request(
            Method::GET,
            &[("cookie", &c), ("authorization", "Bearer nope")],
        );
        assert!(matches!(
            g.api_caller(&both, peer()).await,
            Err(ApiDenied::Http(HttpError::Unauthenticated))
        ));
    }

    #[tokio::test]
    async fn wrong_tokens_are_throttled_per_address_and_the_right_one_still_passes() {
        let a = auth();
        let token = Secret::new("tok_123");
        let g = gate(&a, Some(&token));
        let wrong = request(Method::GET, &[("authorization", "Bearer tok_999")]);
        let other: IpAddr = "192.0.2.77".parse().unwrap();
        // `both` above already counted one failure for peer(); this is a fresh gate.
        for _ in 0..crate::http::auth::API_FREE_FAILURES {
            assert!(matches!(
                g.api_caller(&wrong, other).await,
                Err(ApiDenied::Http(HttpError::Unauthenticated))
            ));
        }
        let Err(ApiDenied::Throttled(wait)) = g.api_caller(&wrong, other).await else {
            panic!("throttled after the limit");
        };
        let r = too_many_tokens(wait);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        let right = request(Method::GET, &[("authorization", "Bearer tok_123")]);
        assert_eq!(g.api_caller(&right, other).await.unwrap(), "api");
        assert!(matches!(
            g.api_caller(&wrong, peer()).await,
            Err(ApiDenied::Http(HttpError::Unauthenticated))
        ));
    }

    #[test]
    fn only_local_dashboard_paths_are_followed_after_login() {
        assert_eq!(
            safe_next(Some("/admin/sessions/cs_1")),
            Some("/admin/sessions/cs_1")
        );
        assert_eq!(safe_next(Some("https://evil.test/admin")), None);
        assert_eq!(safe_next(Some("//evil.test")), None);
        assert_eq!(safe_next(Some("/admin\\..")), None);
        assert_eq!(safe_next(Some("/admin/login")), None);
        assert_eq!(safe_next(None), None);
    }
}
