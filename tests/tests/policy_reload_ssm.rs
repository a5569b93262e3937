//! A warm function takes a changed policy parameter: the policy's SSM parameter (on moto) is
//! looked at again at most once a minute, a new valid version is put in force, and an invalid
//! one is refused, announced once and leaves the policy in force.

use std::sync::Arc;
use std::time::Duration;

use shipgate::aws::bootstrap::SsmPolicy;
use shipgate::domain::policy::Policy;
use shipgate::notify::NotificationBody;
use shipgate::service::{Clock, PolicyFetch, PolicySource, Services};
use testkit::{ManualClock, RecordingPublisher};

const ZERO: &str = "[environments.staging]\napprovals_required = 0\n";
const ONE: &str = "[identities]\nU0APPROV1 = \"alice\"\n\n[environments.staging]\napprovals_required = 1\napprovers = [\"U0APPROV1\"]\n";
const BROKEN: &str = "[environments.staging]\napprovals_required = \"two\"\n";

async fn put(client: &aws_sdk_ssm::Client, name: &str, value: &str) {
    client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("put the parameter");
}

fn required(svc: &Services) -> u32 {
    svc.policy
        .environment("staging")
        .map(|e| e.approvals_required)
        .unwrap_or(u32::MAX)
}

#[tokio::test]
async fn a_new_parameter_version_applies_within_a_minute_and_an_invalid_one_is_refused() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "needs the AWS emulator: run make test (it starts moto and exports AWS_ENDPOINT_URL)"
    );
    let sdk = shipgate::aws::sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&sdk);
    let name = format!("/shipgate-test/{}/policy", uuid::Uuid::new_v4().simple());
    put(&client, &name, ZERO).await;
    let ssm = Arc::new(SsmPolicy::new(client.clone(), name.clone()));
    let (_, text, version) = ssm.fetch().await.expect("read");

    let fakes = testkit::TestServices::builder().policy(ZERO).build().await;
    let clock: ManualClock = fakes.clock.clone();
    let publisher: RecordingPublisher = fakes.publisher.clone();
    let policy = Arc::new(Policy::parse(&name, &text).unwrap());
    let source = PolicySource::with_remote(
        Arc::clone(&policy),
        version,
        ssm,
        Duration::from_secs(60),
        clock.now(),
    );
    let services = Services {
        policy,
        policy_source: Some(source),
        ..fakes.services.clone()
    };
    assert_eq!(required(&services.current().await), 0);

    put(&client, &name, ONE).await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(required(&services.current().await), 0, "not looked at yet");
    clock.advance(Duration::from_secs(31));
    assert_eq!(required(&services.current().await), 1, "the new version");

    put(&client, &name, BROKEN).await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        required(&services.current().await),
        1,
        "the broken one is refused"
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(required(&services.current().await), 1);
    let notices: Vec<_> = publisher
        .taken()
        .into_iter()
        .filter_map(|n| match n.body {
            NotificationBody::Job {
                job, ok, summary, ..
            } => Some((job, ok, summary)),
            _ => None,
        })
        .collect();
    assert_eq!(notices.len(), 1, "announced once per version: {notices:?}");
    assert_eq!(
        (notices[0].0.as_str(), notices[0].1),
        ("policy-reload", false)
    );
    assert!(
        notices[0]
            .2
            .contains("is not valid; the previous one stays in force"),
        "{}",
        notices[0].2
    );
}
