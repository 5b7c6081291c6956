//! `GET /admin/api/sessions.csv`: the session list as CSV, with the list's
//! filters, streamed page by page (memory stays at one page however many
//! sessions there are). One row per session; amounts in minor units with
//! their currency, times in UTC (RFC 3339).

use std::sync::Arc;

use poem::{
    Body, Response, handler,
    http::{StatusCode, header},
    web::{Data, Query},
};

use super::{AppState, api::ListParams, error::HttpError, extract::ApiCaller};
use crate::{
    model::SessionRecord,
    time::{rfc3339_ms, rfc3339_secs},
};

/// Sessions read per page of the export.
const PAGE: usize = 500;

const COLUMNS: [&str; 17] = [
    "id",
    "created_at",
    "livemode",
    "mode",
    "state",
    "payment_status",
    "amount_total",
    "currency",
    "customer_email",
    "payment_intent",
    "amount_refunded",
    "refund_status",
    "dispute_status",
    "subscription",
    "account",
    "last_error",
    "updated_at",
];

#[handler]
pub async fn sessions_csv(
    _caller: ApiCaller,
    Query(p): Query<ListParams>,
    state: Data<&Arc<AppState>>,
) -> Result<Response, HttpError> {
    let query = p.query(PAGE, PAGE)?;
    let store = state.fulfiller.store().clone();
    // The first page is read before answering, so a database that cannot
    // answer is a clear 503, not a truncated file.
    let first = store
        .list(query.clone())
        .await
        .map_err(|e| HttpError::store("cannot list sessions", e))?;
    let mut head = line(&COLUMNS.map(String::from));
    for rec in &first.sessions {
        head.push_str(&row(rec));
    }
    let next = first.next_cursor.clone();
    let rest = futures_util::stream::unfold(
        (store, query, next),
        |(store, mut query, cursor)| async move {
            let cursor = crate::store::parse_cursor(cursor.as_deref()?)?;
            query.cursor = Some(cursor);
            match store.list(query.clone()).await {
                Ok(page) => {
                    let chunk: String = page.sessions.iter().map(row).collect();
                    Some((Ok(chunk), (store, query, page.next_cursor)))
                }
                Err(e) => {
                    // Cut short: the client sees a broken transfer, not a
                    // file that looks complete.
                    tracing::error!(error = %e, "CSV export: cannot read the next page");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (store, query, None),
                    ))
                }
            }
        },
    );
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }),
        rest,
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .content_type("text/csv; charset=utf-8")
        // Customer emails: never kept by a cache or a proxy.
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"fulfilld-sessions.csv\"",
        )
        .body(Body::from_bytes_stream(body)))
}

fn row(rec: &SessionRecord) -> String {
    let opt = |v: Option<&str>| v.unwrap_or_default().to_string();
    line(&[
        rec.id.clone(),
        rfc3339_secs(rec.created),
        rec.livemode.to_string(),
        opt(rec.mode.as_deref()),
        rec.state.as_str().to_string(),
        opt(rec.payment_status.as_deref()),
        rec.amount_total.map(|a| a.to_string()).unwrap_or_default(),
        opt(rec.currency.as_deref()),
        opt(rec.customer_email.as_deref()),
        opt(rec.payment_intent.as_deref()),
        rec.amount_refunded.to_string(),
        rec.refund_status().as_str().to_string(),
        opt(rec.dispute.as_ref().map(|d| d.status.as_str())),
        opt(rec.subscription.as_deref()),
        opt(rec.account.as_deref()),
        opt(rec.last_error.as_deref()),
        rfc3339_ms(rec.updated_at_ms),
    ])
}

/// One CSV record (RFC 4180, CRLF). A field is quoted when it holds a
/// comma, a quote or a line break; one a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, CR at the start: a customer-typed
/// email can) gets a leading `'`, so it shows as the text it is.
fn line(fields: &[String]) -> String {
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = if f.trim_start().starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{f}")
        } else {
            f.clone()
        };
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&f);
        }
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_when_needed_and_formulas_are_defused() {
        let l = line(&[
            "plain".into(),
            "a,b".into(),
            "say \"hi\"".into(),
            "two\nlines".into(),
            "=HYPERLINK(\"x\")".into(),
            "-1".into(),
            " =1+1".into(),
        ]);
        assert_eq!(
            l,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"'=HYPERLINK(\"\"x\"\")\",'-1,' =1+1\r\n"
        );
    }
}
