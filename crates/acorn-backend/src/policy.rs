//! Policy as code: the AWS IoT device policy, the claim policy and the fleet provisioning
//! template, rendered from `acorn-mqtt`'s rules (the one home of topic names:
//! [`acorn_mqtt::DEVICE_POLICY`], [`acorn_mqtt::topics::CLAIM_POLICY`]) and kept as JSON files
//! in `policies/` for the `aws` signer, `docs/aws-iot-setup.md` and the AWS CLI. A test proves
//! each file equals its rendering and that the device policy, the dev stack's mosquitto ACL
//! and `acorn-mqtt` grant exactly the same topics.
//!
//! Resource ARNs name any region and account (`arn:aws:iot:*:*:…`): a policy lives in one
//! account and region and governs only connections to that account's endpoint there, so the
//! file works unchanged in every account.

use acorn_mqtt::Access;
use serde_json::{json, Value};

use crate::signer::{DEFAULT_AWS_POLICY_NAME, THING_ATTRIBUTES};

/// The AWS IoT policy variable for the connected thing's name (= device id = client id).
pub const THING_NAME_VARIABLE: &str = "${iot:Connection.Thing.ThingName}";

/// `policies/device-policy.json`.
pub const DEVICE_POLICY_FILE: &str = include_str!("../../../policies/device-policy.json");
/// `policies/claim-policy.json`.
pub const CLAIM_POLICY_FILE: &str = include_str!("../../../policies/claim-policy.json");
/// `policies/iam-service-policy.json`: the IAM permissions the service's role needs for the
/// `aws` signer (exactly [`crate::signer::AWS_ACTIONS`]).
pub const IAM_SERVICE_POLICY_FILE: &str = include_str!("../../../policies/iam-service-policy.json");
/// `policies/provisioning-template.json`.
pub const PROVISIONING_TEMPLATE_FILE: &str =
    include_str!("../../../policies/provisioning-template.json");

fn arn(kind: &str, name: &str) -> String {
    format!("arn:aws:iot:*:*:{kind}/{name}")
}

/// The statements granting `rules` (topic, access) with `suffix` after each topic.
fn topic_statements(rules: &[(&str, Access)], suffix: &str) -> Vec<Value> {
    let topics = |access: Access, kind: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|(_, a)| *a == access)
            .map(|(topic, _)| arn(kind, &format!("{topic}{suffix}")))
            .collect()
    };
    vec![
        json!({ "Effect": "Allow", "Action": "iot:Publish", "Resource": topics(Access::Publish, "topic") }),
        json!({ "Effect": "Allow", "Action": "iot:Subscribe", "Resource": topics(Access::Subscribe, "topicfilter") }),
        json!({ "Effect": "Allow", "Action": "iot:Receive", "Resource": topics(Access::Subscribe, "topic") }),
    ]
}

/// The device policy: connect as its own thing, [`acorn_mqtt::DEVICE_POLICY`] on its own
/// topics (publish button presses and status; subscribe to and receive settings and
/// commands), and [`acorn_mqtt::topics::ROTATION_POLICY`] (the provisioning API's exact
/// topics, for certificate rotation; AWS answers each to the requesting connection only).
/// Nothing else: no other device's topics, no wildcard.
pub fn device_policy() -> Value {
    let thing = format!("/{THING_NAME_VARIABLE}");
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": "iot:Connect",
        "Resource": arn("client", THING_NAME_VARIABLE),
    })];
    statements.extend(topic_statements(&acorn_mqtt::DEVICE_POLICY, &thing));
    statements.extend(topic_statements(&acorn_mqtt::topics::ROTATION_POLICY, ""));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The claim policy of the shared claim certificate (fleet provisioning by claim): connect as
/// `claim:<anything>` and use [`acorn_mqtt::topics::CLAIM_POLICY`], nothing else.
pub fn claim_policy() -> Value {
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": "iot:Connect",
        "Resource": arn("client", &format!("{}*", acorn_mqtt::topics::CLAIM_CLIENT_PREFIX)),
    })];
    statements.extend(topic_statements(&acorn_mqtt::topics::CLAIM_POLICY, ""));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The fleet provisioning template: the same thing (name = device id, attributes
/// [`THING_ATTRIBUTES`]), active certificate and device policy as the `aws` signer makes.
pub fn provisioning_template() -> Value {
    let params = ["DeviceId", "SerialNumber", "MacAddress", "FirmwareVersion"];
    let mut parameters = serde_json::Map::new();
    for p in params {
        parameters.insert(p.into(), json!({ "Type": "String" }));
    }
    parameters.insert(
        "AWS::IoT::Certificate::Id".into(),
        json!({ "Type": "String" }),
    );
    let mut attributes = serde_json::Map::new();
    for (name, param) in THING_ATTRIBUTES.iter().zip(&params[1..]) {
        attributes.insert((*name).into(), json!({ "Ref": param }));
    }
    json!({
        "Parameters": parameters,
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": { "Ref": "DeviceId" },
                    "AttributePayload": attributes,
                },
                "OverrideSettings": { "AttributePayload": "REPLACE" },
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {
                    "CertificateId": { "Ref": "AWS::IoT::Certificate::Id" },
                    "Status": "ACTIVE",
                },
            },
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": { "PolicyName": DEFAULT_AWS_POLICY_NAME },
            },
        },
    })
}

/// A rendering as the files hold it: pretty JSON, two-space indent, a final newline.
pub fn to_file_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
