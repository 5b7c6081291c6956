//! Signing in and out of the dashboard (`/admin/login`, `/admin/logout`).
//! The login form is refused cross-site; logout is a CSRF-checked form.

use std::sync::Arc;

use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::{Data, Form, Query},
};
use serde::Deserialize;

use super::{
    AppState,
    auth::{LoginResult, device_cookie},
    client::client_addr,
    error::{AsText, HttpError},
    extract::{CsrfChecked, CsrfForm, safe_next, same_origin},
    html_admin, see_other,
};
use crate::{log_limit::LogLimit, views::admin as view};

/// Anyone can post wrong passwords, so these lines are rate limited (the
/// throttle still counts every attempt).
static FAILED_LOGIN_LOG: LogLimit = LogLimit::new("failed admin login", 20);
static THROTTLED_LOGIN_LOG: LogLimit = LogLimit::new("admin login throttled", 20);

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    logged_out: Option<String>,
}

#[handler]
pub async fn login_page(
    req: &Request,
    Query(q): Query<LoginQuery>,
    state: Data<&Arc<AppState>>,
) -> Response {
    if state.auth.session(req).await.is_some() {
        return see_other(safe_next(q.next.as_deref()).unwrap_or("/admin"));
    }
    let message = q.logged_out.is_some().then_some("You are signed out.");
    html_admin(
        StatusCode::OK,
        view::login(message, safe_next(q.next.as_deref()), ""),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

#[handler]
pub async fn login(
    req: &Request,
    Form(form): Form<LoginForm>,
    state: Data<&Arc<AppState>>,
) -> Result<Response, AsText> {
    if !same_origin(req, &state.public_origin) {
        return Err(HttpError::Forbidden("cross-site login refused").into());
    }
    let ip = client_addr(req, &state);
    let device = device_cookie(req);
    let next = safe_next(form.next.as_deref());
    // Bound what is echoed back into the form.
    let username: String = form.username.chars().take(200).collect();
    Ok(
        match state
            .auth
            .login(Some(ip), device.as_deref(), &form.username, &form.password)
            .await
        {
            LoginResult::Ok { session, device } => {
                tracing::info!(client = %ip, "admin signed in");
                let mut r = see_other(next.unwrap_or("/admin"));
                // The session cookie first: clients that read one
                // `Set-Cookie` read that one.
                if let Ok(v) = state.auth.set_cookie(&session).parse() {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                if let Ok(v) = state.auth.set_device_cookie(&device).parse() {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
                r
            }
            LoginResult::Wrong => {
                // Not the typed username: people type passwords into it.
                if FAILED_LOGIN_LOG.admit() {
                    tracing::warn!(client = %ip, device = device.is_some(), "failed admin login");
                }
                html_admin(
                    StatusCode::UNAUTHORIZED,
                    view::login(Some("Wrong username or password."), next, &username),
                )
            }
            LoginResult::Throttled(wait) => {
                if THROTTLED_LOGIN_LOG.admit() {
                    tracing::warn!(client = %ip, "admin login refused: too many failures");
                }
                let mut r = html_admin(
                    StatusCode::TOO_MANY_REQUESTS,
                    view::login(
                        Some(
                            "Too many failed attempts from your address. Wait a minute, then try again.",
                        ),
                        next,
                        &username,
                    ),
                );
                if let Ok(v) = (wait.as_secs() + 1).to_string().parse() {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            LoginResult::Unavailable => html_admin(
                StatusCode::SERVICE_UNAVAILABLE,
                view::login(
                    Some("Signing in is unavailable right now. Try again in a moment."),
                    next,
                    &username,
                ),
            ),
        },
    )
}

/// A form whose only field is the CSRF token.
#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// Signs out. Without a login there is nothing to end: back to the login
/// page (not a 403), as a stale tab's "Sign out" button expects.
#[handler]
pub async fn logout(
    req: &Request,
    checked: poem::Result<CsrfChecked<CsrfOnly>>,
    state: Data<&Arc<AppState>>,
) -> poem::Result<Response> {
    let admin = match checked {
        Ok(c) => c.admin,
        Err(e)
            if matches!(
                e.downcast_ref::<AsText>(),
                Some(AsText(HttpError::NotSignedIn))
            ) =>
        {
            return Ok(see_other("/admin/login"));
        }
        Err(e) => return Err(e),
    };
    // A sign-in that could not be ended is not reported as ended.
    state
        .auth
        .logout(req)
        .await
        .map_err(|e| HttpError::store("cannot end a dashboard sign-in", e))?;
    tracing::info!(user = %admin.username, "admin signed out");
    let mut r = see_other("/admin/login?logged_out=1");
    if let Ok(v) = state.auth.clear_cookie().parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}
