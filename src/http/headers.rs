//! Headers every response carries, whatever produced it: handlers, poem's
//! own 404/405 answers, extractor rejections, plain-text errors and assets.
//!
//! Guarantees: `X-Content-Type-Options: nosniff` on every response that
//! passes through the route tree (so no browser reinterprets a plain-text
//! error or an asset as HTML or script); `Strict-Transport-Security` on every
//! response when `server.public_url` is https (a browser that reached the
//! service over TLS once never falls back to clear text for a year). HSTS
//! is never sent for an http public URL: it would be ignored over http and
//! would break a deployment that has no TLS at all.

use poem::{
    Endpoint, Middleware, Request, Response, Result,
    http::{HeaderValue, header},
};

/// One year, as recommended by hstspreload.org's minimum.
const HSTS: &str = "max-age=31536000";

/// The middleware; `hsts` when `server.public_url` is https.
pub struct SecurityHeaders {
    pub hsts: bool,
}

impl SecurityHeaders {
    /// From `server.public_url`'s origin (`scheme://host[:port]`).
    pub fn for_origin(public_origin: &str) -> Self {
        SecurityHeaders {
            hsts: public_origin
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://")),
        }
    }
}

impl<E: Endpoint> Middleware<E> for SecurityHeaders {
    type Output = SecurityHeadersEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        SecurityHeadersEndpoint {
            inner,
            hsts: self.hsts,
        }
    }
}

pub struct SecurityHeadersEndpoint<E> {
    inner: E,
    hsts: bool,
}

impl<E: Endpoint> Endpoint for SecurityHeadersEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        // `get_response` turns an error (no such route, a rejected
        // extractor) into its response, so those get the headers too.
        let mut response = self.inner.get_response(req).await;
        let h = response.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.hsts {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static(HSTS),
            );
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use poem::{EndpointExt, Route, handler, http::Method, http::StatusCode};

    use super::*;

    #[handler]
    fn plain() -> Response {
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body("no")
    }

    #[tokio::test]
    async fn every_answer_gets_nosniff_and_hsts_only_for_https() {
        for (origin, hsts) in [
            ("https://orders.example.com", true),
            ("HTTPS://orders.example.com", true),
            ("http://localhost:4242", false),
            ("", false),
        ] {
            let app = Route::new()
                .at("/plain", poem::get(plain))
                .with(SecurityHeaders::for_origin(origin));
            for (method, path, status) in [
                (Method::GET, "/plain", StatusCode::BAD_REQUEST),
                (Method::GET, "/no-such-route", StatusCode::NOT_FOUND),
                (Method::POST, "/plain", StatusCode::METHOD_NOT_ALLOWED),
            ] {
                let req = Request::builder().method(method).uri_str(path).finish();
                let r = app.get_response(req).await;
                assert_eq!(r.status(), status, "{path}");
                assert_eq!(
                    r.headers()
                        .get("x-content-type-options")
                        .map(|v| v.as_bytes()),
                    Some(&b"nosniff"[..]),
                    "{origin} {path}"
                );
                let got = r.headers().get("strict-transport-security");
                assert_eq!(got.is_some(), hsts, "{origin} {path}");
            }
        }
    }
}
