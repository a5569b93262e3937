//! CloudWatch as an analysis metric source: `GetMetricData` against moto, with data points
//! the test puts first. Needs the emulator `make test` starts (it exports AWS_ENDPOINT_URL).

use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use jiff::{SignedDuration, Timestamp};
use shipgate::aws::cloudwatch::{parse_queries, CloudWatch};
use shipgate::outbound::metrics::{MetricSource, SourceError};

async fn client() -> aws_sdk_cloudwatch::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "needs the AWS emulator: run make test (it starts moto and exports AWS_ENDPOINT_URL)"
    );
    aws_sdk_cloudwatch::Client::new(&shipgate::aws::sdk_config().await)
}

/// Puts `values`, one a minute ending at `end`, as metric `metric{Service=api}` in `namespace`.
/// (Each test names its own metric too: moto matches GetMetricData queries by metric name and
/// dimensions across namespaces.)
async fn put(
    client: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    end: Timestamp,
    values: &[f64],
) {
    let n = values.len() as i64;
    for (i, v) in values.iter().enumerate() {
        let at = end
            .checked_sub(SignedDuration::from_mins(n - 1 - i as i64))
            .expect("time");
        client
            .put_metric_data()
            .namespace(namespace)
            .metric_data(
                MetricDatum::builder()
                    .metric_name(metric)
                    .dimensions(Dimension::builder().name("Service").value("api").build())
                    .timestamp(DateTime::from_secs(at.as_second()))
                    .value(*v)
                    .unit(StandardUnit::Count)
                    .build(),
            )
            .send()
            .await
            .expect("put metric data");
    }
}

fn errors_query(namespace: &str, metric: &str) -> String {
    format!(
        r#"[{{"Id": "errors", "MetricStat": {{"Metric": {{"Namespace": "{namespace}", "MetricName": "{metric}", "Dimensions": [{{"Name": "Service", "Value": "api"}}]}}, "Period": 60, "Stat": "Sum"}}}}]"#
    )
}

/// A whole minute a little in the past (CloudWatch takes recent points).
fn minute_ago() -> Timestamp {
    let now = Timestamp::now().as_second();
    Timestamp::from_second(now - now % 60 - 60).expect("time")
}

#[tokio::test]
async fn a_sample_is_the_newest_point_and_a_baseline_the_mean_of_the_span() {
    let client = client().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (namespace, metric) = (format!("shipgate-test/{id}"), format!("Errors-{id}"));
    let end = minute_ago();
    put(&client, &namespace, &metric, end, &[1.0, 2.0, 3.0, 10.0]).await;
    let source = CloudWatch::new(client);
    let query = errors_query(&namespace, &metric);
    // The point stamped `end` covers the minute after it: it counts once that minute is over.
    let after = end.checked_add(SignedDuration::from_mins(1)).expect("time");
    assert_eq!(source.value_at(&query, after).await, Ok(Some(10.0)));
    assert_eq!(source.value_at(&query, end).await, Ok(Some(3.0)));
    // The minutes that ended in the span: 1, 2 and 3.
    let from = end
        .checked_sub(SignedDuration::from_mins(10))
        .expect("time");
    assert_eq!(
        source
            .mean_over(&query, from, end, Duration::from_secs(60))
            .await,
        Ok(Some(2.0))
    );
    // Nothing there: no value, not zero.
    let other = errors_query(&namespace, &format!("{metric}-empty"));
    assert_eq!(source.value_at(&other, after).await, Ok(None));
}

#[test]
fn queries_are_checked_before_anything_is_asked() {
    assert!(parse_queries(&errors_query("ns", "Errors")).is_ok());
    let two = r#"[{"Id": "a", "Expression": "SEARCH('x', 'Sum', 60)"}, {"Id": "b", "Expression": "a*2"}]"#;
    assert_eq!(
        parse_queries(two).map(|_| ()).unwrap_err(),
        "exactly one metric data query must return data (ReturnData is true unless false); 2 do"
    );
    let one = r#"[{"Id": "a", "Expression": "SEARCH('x', 'Sum', 300)", "ReturnData": false}, {"Id": "b", "Expression": "a*2", "Period": 300}]"#;
    assert_eq!(parse_queries(one).map(|(_, p)| p), Ok(300));
    assert!(parse_queries("rate(x[1m])")
        .unwrap_err()
        .contains("JSON list"));
    assert!(parse_queries(r#"[{"Id": "a"}]"#)
        .unwrap_err()
        .contains("either MetricStat or Expression"));
    assert!(parse_queries(r#"[{"Id": "a", "MetricStat": {"Metric": {"Namespace": "n", "MetricName": "m"}, "Period": 60}}]"#)
        .unwrap_err()
        .contains("needs a Stat"));
}

#[tokio::test]
async fn cloudwatch_out_of_reach_is_unreachable_not_a_value() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let sdk = shipgate::aws::sdk_config().await;
    let conf = aws_sdk_cloudwatch::config::Builder::from(&sdk)
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
        .build();
    let source = CloudWatch::new(aws_sdk_cloudwatch::Client::from_conf(conf));
    let answer = source
        .value_at(&errors_query("ns", "Errors"), minute_ago())
        .await;
    match answer {
        Err(SourceError::Unreachable { url, cause }) => {
            assert_eq!(url, "CloudWatch");
            assert!(cause.contains("dispatch failure"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
}
