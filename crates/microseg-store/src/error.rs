//! The store's one error type: every variant says what went wrong and where.

use std::path::PathBuf;

/// Errors of the durable store, the workspace and the importers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No workspace at the given directory.
    #[error("no microseg workspace at {0} (create one with `microseg init {0}`)")]
    NotAWorkspace(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An import file that cannot be read at all.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The workspace config is invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A column named on the command line is not in the file.
    #[error("{path}: no column '{column}' (columns: {available})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The columns the file has, comma separated.
        available: String,
    },
    /// An option value that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// A change the store refuses because of what was asked (a bad segment name, a
    /// condition over the size limits, a segment still in use): the caller's to fix.
    #[error("{0}")]
    Refused(String),
    /// A profile that does not exist.
    #[error("no profile with id '{0}'")]
    UnknownProfile(String),
    /// Something else that does not exist (an experiment, a model); the message says
    /// what and what there is.
    #[error("{0}")]
    NotFound(String),
    /// A condition that cannot be evaluated (unknown name, wrong type, bad reference).
    #[error(transparent)]
    Eval(#[from] microseg_engine::EvalError),
    /// The SQLite store failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
