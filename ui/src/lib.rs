//! The web dashboard: three static files (HTML, one JavaScript module, CSS) compiled
//! into the binary and served at `/` of the HTTP API's listener. The page talks only to
//! the HTTP API (`/api/v1`), so it shows and does exactly what the API allows; it
//! needs no network beyond that listener (no CDN, no web fonts) and no build step:
//! plain JavaScript that browsers run as written (docs/dashboard.md says why).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change only with the binary: a reload after an upgrade fetches
            // them again, a reload in between costs a revalidation only.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/`, `/ui/app.js` and `/ui/app.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_its_module_and_styles_from_the_binary_only() {
        assert!(super::INDEX.contains(r#"<script type="module" src="/ui/app.js">"#));
        assert!(super::INDEX.contains(r#"href="/ui/app.css""#));
        for text in [super::INDEX, super::APP_JS, super::APP_CSS] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "no outside resources"
            );
        }
    }
}
