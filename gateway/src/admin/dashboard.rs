//! The dashboard: one page and its assets, embedded in the binary
//! (`gateway/assets/`; uPlot is vendored there, nothing comes from a CDN).
//! The page is served with the current snapshot in it, so it draws the
//! fleet at once, before its event stream opens.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::snapshot::Snapshot;
use crate::Shared;

const INDEX: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const JOBS_JS: &str = include_str!("../../assets/jobs.js");
const TEMPLATES_JS: &str = include_str!("../../assets/templates.js");
const CLUSTER_JS: &str = include_str!("../../assets/cluster.js");
const TREE_JS: &str = include_str!("../../assets/tree.js");
const STYLE: &str = include_str!("../../assets/style.css");
const UPLOT_JS: &str = include_str!("../../assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/vendor/uPlot.min.css");

/// The page's element that carries the snapshot (JSON), as in `INDEX`.
const SNAPSHOT_SLOT: &str = r#"<script id="snapshot" type="application/json">null</script>"#;

/// `GET /`: the dashboard page, with the snapshot of now in it.
pub(super) async fn index(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = serde_json::to_string(&Snapshot::take(&shared, Instant::now()))
        .unwrap_or_else(|_| "null".to_string());
    let page = with_snapshot(INDEX, &snapshot);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `page` with `json` in its snapshot element. `<`, `>` and `&` are
/// written as JSON escapes (`\u003c`...: they appear only inside JSON
/// strings), so no text in a snapshot can end the element.
fn with_snapshot(page: &str, json: &str) -> String {
    let mut safe = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            c => safe.push(c),
        }
    }
    let slot = format!(r#"<script id="snapshot" type="application/json">{safe}</script>"#);
    page.replacen(SNAPSHOT_SLOT, &slot, 1)
}

/// `GET /assets/{file}`: the page's scripts and styles.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "jobs.js" => (JOBS_JS, "text/javascript; charset=utf-8"),
        "templates.js" => (TEMPLATES_JS, "text/javascript; charset=utf-8"),
        "cluster.js" => (CLUSTER_JS, "text/javascript; charset=utf-8"),
        "tree.js" => (TREE_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "uPlot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_a_snapshot_slot() {
        assert_eq!(INDEX.matches(SNAPSHOT_SLOT).count(), 1);
    }

    #[tokio::test]
    async fn the_cluster_panel_and_its_script_are_served() {
        assert!(INDEX.contains(r#"<section id="cluster-section">"#));
        assert!(INDEX.contains(r#"<script src="/assets/cluster.js"></script>"#));
        let served = asset(Path("cluster.js".to_string())).await;
        assert_eq!(served.status(), StatusCode::OK);
        assert!(CLUSTER_JS.contains("/api/cluster"));
    }

    #[test]
    fn no_snapshot_text_can_end_its_element() {
        let json = serde_json::json!({"nodes": [{"id": "</script><script>alert(1)</script>&"}]})
            .to_string();
        let page = with_snapshot(INDEX, &json);
        assert_eq!(
            page.matches("</script>").count(),
            INDEX.matches("</script>").count()
        );
        let start = page.find(r#"type="application/json">"#).expect("slot") + 24;
        let end = start + page[start..].find("</script>").expect("end");
        let back: serde_json::Value = serde_json::from_str(&page[start..end]).expect("JSON");
        assert_eq!(
            back["nodes"][0]["id"],
            "</script><script>alert(1)</script>&"
        );
    }
}
