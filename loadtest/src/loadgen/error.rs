//! What can stop a run.

/// Errors of [`run`](super::run) and of loading a [`Config`](super::Config).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The configuration or scenario file is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The simulator's side door did not answer as expected.
    #[error("smsc-sim at {url}: {why}")]
    Sim {
        /// The simulator URL.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// The report could not be serialized.
    #[error("report: {0}")]
    Report(#[from] serde_json::Error),
}
