//! HTML pages, rendered with maud (which escapes every interpolated string).
//! Pure functions from records to markup: no I/O here.

pub mod admin;
pub mod email;
pub mod landing;

use maud::{DOCTYPE, Markup, html};

/// The page frame shared by every page.
pub fn page(title: &str, refresh_secs: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                @if let Some(s) = refresh_secs {
                    meta http-equiv="refresh" content=(s);
                }
                title { (title) }
                link rel="stylesheet" href="/assets/app.css";
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
            }
            body {
                main class="card" { (body) }
            }
        }
    }
}
