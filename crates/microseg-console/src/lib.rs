//! microseg's web console and its shareable report. The console is plain HTML, CSS and
//! JavaScript modules embedded in the binary ([`asset`]); each page asks the server for
//! one JSON document computed by [`views`], charts included as SVG drawn by [`charts`].
//! [`report`] writes the same views into one self-contained HTML file.

pub mod charts;
pub mod report;
pub mod views;

use microseg_engine::models::personas::PersonaError;
use microseg_engine::EvalError;
use microseg_store::StoreError;

/// Why a page's data could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A condition or name the data cannot evaluate.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A campaign's run or results.
    #[error(transparent)]
    Run(#[from] microseg_activate::run::RunError),
    /// Personas that cannot be made.
    #[error(transparent)]
    Personas(#[from] PersonaError),
    /// A request that names nothing known.
    #[error("{0}")]
    NotFound(String),
    /// A request the page cannot answer as asked.
    #[error("{0}")]
    Invalid(String),
}

/// One embedded file of the console: its content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The `Content-Type` to serve it with.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static str,
}

/// The console's file at `path` (`/` is the page itself), if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_str!("../assets/index.html"),
        ),
        "/console/app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../assets/app.js"),
        ),
        "/console/style.css" => (
            "text/css; charset=utf-8",
            include_str!("../assets/style.css"),
        ),
        _ => return None,
    };
    Some(Asset { content_type, body })
}
