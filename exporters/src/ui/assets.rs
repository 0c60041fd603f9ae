//! The pages, built into the binary. cytoscape.js 3.35.0 (MIT, the licence
//! is served next to it at /assets/cytoscape-LICENSE.txt) lays out the map.

/// (content type, body) of a static path.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    Some(match path {
        "/map" => (HTML, include_bytes!("assets/map.html")),
        "/analytics" => (HTML, include_bytes!("assets/analytics.html")),
        "/health" => (HTML, include_bytes!("assets/health.html")),
        "/assets/app.css" => ("text/css; charset=utf-8", include_bytes!("assets/app.css")),
        "/assets/common.js" => (JS, include_bytes!("assets/common.js")),
        "/assets/map.js" => (JS, include_bytes!("assets/map.js")),
        "/assets/analytics.js" => (JS, include_bytes!("assets/analytics.js")),
        "/assets/health.js" => (JS, include_bytes!("assets/health.js")),
        "/assets/cytoscape.min.js" => (JS, include_bytes!("assets/cytoscape.min.js")),
        "/assets/cytoscape-LICENSE.txt" => (
            "text/plain; charset=utf-8",
            include_bytes!("assets/cytoscape-LICENSE.txt"),
        ),
        "/favicon.ico" => ("image/svg+xml", include_bytes!("assets/favicon.svg")),
        _ => return None,
    })
}
