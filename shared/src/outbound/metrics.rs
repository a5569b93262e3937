//! Where analysis reads a deployment's metrics: a [`MetricSource`] evaluates a query at a time
//! (a sample) or averages it over a span (a baseline). [`Prometheus`](super::prometheus) is
//! one.

use std::time::Duration;

use jiff::Timestamp;

/// Why a query gave no number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source could not be reached or timed out, or answered with an error page.
    #[error("{url} could not be asked: {cause}")]
    Unreachable { url: String, cause: String },
    /// The source refused the query: a syntax error, a bad time, a missing permission.
    #[error("the query was refused ({error_type}): {message}")]
    Refused { error_type: String, message: String },
    /// The query gives several series where one number is needed.
    #[error(
        "the query returned {0} series; aggregate it to one (sum, max, histogram_quantile...)"
    )]
    Series(usize),
    /// An answer shipgate cannot read.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// A metric store analysis can ask.
#[async_trait::async_trait]
pub trait MetricSource: Send + Sync {
    /// The value of `query` at `at`: `Ok(None)` when there is none (no data, or NaN).
    async fn value_at(&self, query: &str, at: Timestamp) -> Result<Option<f64>, SourceError>;

    /// The mean of `query` over `[from, to]`, evaluated every `step`: `Ok(None)` when it has
    /// no value there.
    async fn mean_over(
        &self,
        query: &str,
        from: Timestamp,
        to: Timestamp,
        step: Duration,
    ) -> Result<Option<f64>, SourceError>;
}
