//! Static files compiled into the binary from `assets/` (no CDN, works offline).

use poem::{Response, handler, http::header, web::Path};
use rust_embed::Embed;

use super::error::{AsText, HttpError};

#[derive(Embed)]
#[folder = "assets/"]
struct Assets;

#[handler]
pub async fn serve(Path(path): Path<String>) -> Result<Response, AsText> {
    let file = Assets::get(&path).ok_or(AsText(HttpError::NotFound("not found")))?;
    let content_type = match path.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    };
    Ok(Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .header("x-content-type-options", "nosniff")
        .body(file.data.into_owned()))
}
