//! The pages, built into the binary. cytoscape.js 3.35.0 (MIT, the licence
//! is served next to it at /assets/cytoscape-LICENSE.txt) lays out the map.

use bytes::Bytes;

pub const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The pages: path, page id (`data-page`, which the navigation marks) and
/// title, and the page's own part (its `<main>` and scripts).
const PAGES: [(&str, &str, &str, &str); 4] = [
    (
        "/map",
        "map",
        "Network Map",
        include_str!("assets/map.html"),
    ),
    (
        "/analytics",
        "analytics",
        "Network Analytics",
        include_str!("assets/analytics.html"),
    ),
    (
        "/health",
        "health",
        "Network Health",
        include_str!("assets/health.html"),
    ),
    (
        "/path",
        "path",
        "Network Path",
        include_str!("assets/paths.html"),
    ),
];

/// The pages put together once, when the exporter is built: the shared
/// head and navigation (`assets/shell.html`) with each page's part, whose
/// `{range}` is the time-range control every page has
/// (`assets/range.html`).
pub struct Pages(Vec<(&'static str, Bytes)>);

/// The fleet view's longer presets: the storage keeps days, not an hour.
const FLEET_RANGES: &str = "  <option value=\"6h\">last 6 hours</option>\n  \
<option value=\"1d\">last day</option>\n  <option value=\"7d\">last 7 days</option>\n</select>";

impl Pages {
    pub fn new() -> Self {
        Self::with_range(include_str!("assets/range.html"))
    }

    /// The pages of the fleet view (`flowscope ui`): the same, with time
    /// ranges up to 7 days.
    pub fn fleet() -> Self {
        Self::with_range(&include_str!("assets/range.html").replace("</select>", FLEET_RANGES))
    }

    fn with_range(range: &str) -> Self {
        let shell = include_str!("assets/shell.html");
        Pages(
            PAGES
                .iter()
                .map(|(path, id, title, own)| {
                    let head = shell.replace("{title}", title).replace("{page}", id);
                    let own = own.replace("{range}", range.trim_end());
                    (*path, Bytes::from(head + &own))
                })
                .collect(),
        )
    }

    /// The HTML of page `path`.
    pub fn get(&self, path: &str) -> Option<Bytes> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, b)| b.clone())
    }
}

/// (content type, body) of a static file.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/assets/app.css" => ("text/css; charset=utf-8", include_bytes!("assets/app.css")),
        "/assets/common.js" => (JS, include_bytes!("assets/common.js")),
        "/assets/map.js" => (JS, include_bytes!("assets/map.js")),
        "/assets/analytics.js" => (JS, include_bytes!("assets/analytics.js")),
        "/assets/health.js" => (JS, include_bytes!("assets/health.js")),
        "/assets/paths.js" => (JS, include_bytes!("assets/paths.js")),
        "/assets/cytoscape.min.js" => (JS, include_bytes!("assets/cytoscape.min.js")),
        "/assets/cytoscape-LICENSE.txt" => (
            "text/plain; charset=utf-8",
            include_bytes!("assets/cytoscape-LICENSE.txt"),
        ),
        "/favicon.ico" => ("image/svg+xml", include_bytes!("assets/favicon.svg")),
        _ => return None,
    })
}
