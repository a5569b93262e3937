//! CloudWatch as a metric source for analysis: `GetMetricData` with a check's metric data
//! queries, written as `aws cloudwatch get-metric-data --metric-data-queries` takes them (a
//! JSON list of `MetricStat` and metric math `Expression` entries), of which exactly one returns
//! data (`ReturnData`, true unless set to false). A point stamped `T` aggregates
//! `[T, T + period)`, so only points whose period has ended count: a sample's value at `t` is
//! the newest point stamped at or before `t - period` (looking back five periods), as
//! Prometheus's `rate(x[1m])` at `t` covers the minute before `t`; a baseline is the mean of the
//! points whose periods lie in the span.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_cloudwatch::Client;
use jiff::Timestamp;
use serde_json::Value;

use crate::outbound::metrics::{MetricSource, SourceError};

/// How many periods before a sample's time its newest point may be.
const LOOKBACK_PERIODS: i64 = 5;

/// CloudWatch in one region.
#[derive(Debug, Clone)]
pub struct CloudWatch {
    client: Client,
}

impl CloudWatch {
    pub fn new(client: Client) -> Self {
        CloudWatch { client }
    }

    /// The points of the query that returns data whose periods of `period` seconds end in
    /// `(from, to]`, oldest first.
    async fn complete_points(
        &self,
        queries: &[MetricDataQuery],
        period: i64,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(i64, f64)>, SourceError> {
        let back = |t: Timestamp| {
            t.checked_sub(jiff::SignedDuration::from_secs(period))
                .unwrap_or(Timestamp::UNIX_EPOCH)
        };
        // EndTime is exclusive: one second past the last start that counts.
        let end = back(to)
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(to);
        self.points(queries, back(from), end).await
    }

    /// The points of the query that returns data stamped in `[from, to)`, oldest first.
    async fn points(
        &self,
        queries: &[MetricDataQuery],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(i64, f64)>, SourceError> {
        let mut points = Vec::new();
        let mut returned: Option<String> = None;
        let mut next: Option<String> = None;
        loop {
            let answer = self
                .client
                .get_metric_data()
                .set_metric_data_queries(Some(queries.to_vec()))
                .start_time(DateTime::from_millis(from.as_millisecond()))
                .end_time(DateTime::from_millis(to.as_millisecond()))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| {
                    let code = e.as_service_error().and_then(|s| {
                        use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
                        s.code().map(str::to_owned)
                    });
                    let text = aws_sdk_cloudwatch::error::DisplayErrorContext(&e).to_string();
                    match code {
                        Some(code) => SourceError::Refused {
                            error_type: code,
                            message: text,
                        },
                        None => SourceError::Unreachable {
                            url: "CloudWatch".into(),
                            cause: text,
                        },
                    }
                })?;
            for result in answer.metric_data_results() {
                let id = result.id().unwrap_or_default().to_owned();
                match &returned {
                    Some(seen) if *seen != id => return Err(SourceError::Series(2)),
                    _ => returned = Some(id),
                }
                for (at, value) in result.timestamps().iter().zip(result.values()) {
                    points.push((at.secs(), *value));
                }
            }
            match answer.next_token() {
                Some(token) => next = Some(token.to_owned()),
                None => break,
            }
        }
        points.sort_by_key(|(at, _)| *at);
        Ok(points.into_iter().filter(|(_, v)| v.is_finite()).collect())
    }
}

#[async_trait]
impl MetricSource for CloudWatch {
    async fn value_at(&self, query: &str, at: Timestamp) -> Result<Option<f64>, SourceError> {
        let (queries, period) = parse_queries(query).map_err(SourceError::Answer)?;
        let from = at
            .checked_sub(jiff::SignedDuration::from_secs(period * LOOKBACK_PERIODS))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let points = self.complete_points(&queries, period, from, at).await?;
        Ok(points.last().map(|(_, v)| *v))
    }

    async fn mean_over(
        &self,
        query: &str,
        from: Timestamp,
        to: Timestamp,
        _step: Duration,
    ) -> Result<Option<f64>, SourceError> {
        let (queries, period) = parse_queries(query).map_err(SourceError::Answer)?;
        let points = self.complete_points(&queries, period, from, to).await?;
        if points.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            points.iter().map(|(_, v)| v).sum::<f64>() / points.len() as f64,
        ))
    }
}

/// Parses the metric data queries of a check (checked by
/// [`check_cloudwatch_queries`](crate::domain::analysis::check_cloudwatch_queries)), and the
/// longest period among them.
pub fn parse_queries(text: &str) -> Result<(Vec<MetricDataQuery>, i64), String> {
    let period = crate::domain::analysis::check_cloudwatch_queries(text)?;
    let items: Vec<Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let seconds = |v: &Value| {
        v.get("Period")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
    };
    let queries = items
        .iter()
        .map(|item| {
            let mut q = MetricDataQuery::builder()
                .set_id(field(item, "Id"))
                .return_data(
                    item.get("ReturnData")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                )
                .set_label(field(item, "Label"))
                .set_period(seconds(item))
                .set_expression(field(item, "Expression"));
            if let Some(stat) = item.get("MetricStat") {
                let metric = stat.get("Metric").cloned().unwrap_or_default();
                let dimensions = metric
                    .get("Dimensions")
                    .and_then(Value::as_array)
                    .map(|ds| {
                        ds.iter()
                            .map(|d| {
                                Dimension::builder()
                                    .set_name(field(d, "Name"))
                                    .set_value(field(d, "Value"))
                                    .build()
                            })
                            .collect()
                    });
                q = q.metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .set_namespace(field(&metric, "Namespace"))
                                .set_metric_name(field(&metric, "MetricName"))
                                .set_dimensions(dimensions)
                                .build(),
                        )
                        .set_period(seconds(stat))
                        .set_stat(field(stat, "Stat"))
                        .build(),
                );
            }
            q.build()
        })
        .collect();
    Ok((queries, period))
}

/// CloudWatch clients from the process's AWS configuration, for analysis sources.
pub struct SdkCloudWatch {
    sdk: aws_config::SdkConfig,
}

impl SdkCloudWatch {
    pub fn new(sdk: aws_config::SdkConfig) -> Self {
        SdkCloudWatch { sdk }
    }
}

impl crate::service::analysis::CloudWatchSources for SdkCloudWatch {
    fn cloudwatch(&self, region: Option<&str>) -> std::sync::Arc<dyn MetricSource> {
        let mut conf = aws_sdk_cloudwatch::config::Builder::from(&self.sdk);
        if let Some(region) = region {
            conf = conf.region(aws_sdk_cloudwatch::config::Region::new(region.to_owned()));
        }
        std::sync::Arc::new(CloudWatch::new(Client::from_conf(conf.build())))
    }
}
