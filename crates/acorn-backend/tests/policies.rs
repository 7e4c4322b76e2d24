//! Policy as code: the files in `policies/` are exactly what `acorn_backend::policy` renders
//! from acorn-mqtt's rules, and the AWS IoT device policy, the dev stack's mosquitto ACL and
//! acorn-mqtt's `Topics` grant a device exactly the same topics.
//!
//! After a deliberate change of the rules, rewrite the files with
//! `ACORN_BLESS=1 cargo test -p acorn-backend --test policies`.

use std::path::PathBuf;

use acorn_backend::policy;
use serde_json::Value;

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn the_policy_files_are_rendered_from_acorn_mqtt_rules() {
    let files = [
        (
            "device-policy.json",
            policy::DEVICE_POLICY_FILE,
            policy::device_policy(),
        ),
        (
            "claim-policy.json",
            policy::CLAIM_POLICY_FILE,
            policy::claim_policy(),
        ),
        (
            "provisioning-template.json",
            policy::PROVISIONING_TEMPLATE_FILE,
            policy::provisioning_template(),
        ),
    ];
    let bless = std::env::var_os("ACORN_BLESS").is_some();
    for (name, text, rendered) in files {
        let path = policies_dir().join(name);
        let on_disk = std::fs::read_to_string(&path).expect("policy file readable");
        assert_eq!(
            on_disk, text,
            "{name}: the compiled-in copy is stale; rebuild"
        );
        let expected = policy::to_file_text(&rendered);
        if bless {
            std::fs::write(&path, &expected).expect("write policy file");
            continue;
        }
        assert_eq!(
            on_disk, expected,
            "policies/{name} differs from what acorn-mqtt's rules render; if the rules changed on \
             purpose, run ACORN_BLESS=1 cargo test -p acorn-backend --test policies"
        );
    }
}

/// What an AWS IoT policy document allows `thing` to do, evaluated the simple way AWS does
/// for Allow-only documents: an action is allowed when some statement lists it and one of its
/// resources matches (with `*` as a wildcard and the thing-name variable substituted).
fn aws_allows(document: &Value, action: &str, resource: &str, thing: &str) -> bool {
    document["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .any(|st| {
            assert_eq!(st["Effect"], "Allow", "only Allow statements are used");
            let actions: Vec<&str> = match &st["Action"] {
                Value::String(a) => vec![a.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                other => panic!("Action {other}"),
            };
            let resources: Vec<&str> = match &st["Resource"] {
                Value::String(r) => vec![r.as_str()],
                Value::Array(r) => r.iter().filter_map(Value::as_str).collect(),
                other => panic!("Resource {other}"),
            };
            actions.contains(&action)
                && resources.iter().any(|pattern| {
                    glob(
                        &pattern.replace(policy::THING_NAME_VARIABLE, thing),
                        resource,
                    )
                })
        })
}

/// `*` matches any run of characters (AWS IoT resource wildcards); nothing else is special.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| glob(tail, &text[head.len() + i..]))
        }
    }
}

/// What mosquitto's ACL patterns allow user `user`: `pattern read|write TOPIC` with `%u`.
fn acl_allows(acl: &[String], verb: &str, topic: &str, user: &str) -> bool {
    acl.iter().any(|line| {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts[0], "pattern", "{line}");
        let (access, filter) = match parts.as_slice() {
            ["pattern", access, filter] => (*access, *filter),
            ["pattern", filter] => ("readwrite", *filter),
            _ => panic!("unexpected ACL line {line}"),
        };
        (access == verb || access == "readwrite") && filter.replace("%u", user) == topic
    })
}

#[test]
fn the_device_policy_the_mosquitto_acl_and_acorn_mqtt_grant_the_same_topics() {
    let document: Value = serde_json::from_str(policy::DEVICE_POLICY_FILE).expect("JSON");
    let mut acl = acorn_devstack::broker::device_acl_patterns();
    let local = acorn_devstack::broker::LocalProvisioning {
        template: acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE.into(),
        responder: "service:backend".into(),
    };
    acl.extend(local.device_patterns().expect("patterns"));
    let me = "acorn-0001";
    let local_me = acorn_mqtt::provisioning::local_prefix(me);
    let topics = acorn_mqtt::Topics::new(me).expect("topics");
    let mut candidates: Vec<String> = Vec::new();
    for prefix in [
        acorn_mqtt::TOPIC_BUTTON_PRESS,
        acorn_mqtt::TOPIC_DEVICE_STATUS,
        acorn_mqtt::TOPIC_SETTINGS,
        acorn_mqtt::TOPIC_COMMANDS,
        "acorn-pups/other",
    ] {
        for who in [me, "acorn-0002", "+", "#", "acorn-0001/x", "acorn-000"] {
            candidates.push(format!("{prefix}/{who}"));
        }
    }
    candidates.extend([
        "acorn-pups/#".into(),
        "#".into(),
        "$aws/things/acorn-0001/shadow/update".into(),
    ]);
    // The provisioning API (certificate rotation): as is against AWS, under the device's
    // own prefix against the local stack, and another device's prefix for neither.
    for (topic, _) in acorn_mqtt::topics::ROTATION_POLICY {
        for prefix in [
            "",
            local_me.as_str(),
            "acorn-local/acorn-0002/",
            "acorn-local/+/",
        ] {
            candidates.push(format!("{prefix}{topic}"));
        }
    }
    candidates.push("$aws/certificates/create/json".into());
    let rotation = |access: acorn_mqtt::Access, topic: &str| {
        acorn_mqtt::topics::ROTATION_POLICY
            .iter()
            .any(|(t, a)| *a == access && t == &topic)
    };
    let mut granted = 0;
    let mut granted_aws = 0;
    for topic in &candidates {
        // The rule itself: publish on its button-press and status topics, subscribe to its
        // settings and commands topics; the provisioning API's requests and answers.
        let own = topic == topics.button_press() || topic == topics.status();
        let own_sub = topics.subscriptions().contains(&topic.as_str());
        let local_topic = topic.strip_prefix(local_me.as_str());
        let acl_publish =
            own || local_topic.is_some_and(|t| rotation(acorn_mqtt::Access::Publish, t));
        let acl_subscribe =
            own_sub || local_topic.is_some_and(|t| rotation(acorn_mqtt::Access::Subscribe, t));
        let may_publish = own || rotation(acorn_mqtt::Access::Publish, topic);
        let may_subscribe = own_sub || rotation(acorn_mqtt::Access::Subscribe, topic);
        let aws_publish = aws_allows(
            &document,
            "iot:Publish",
            &format!("arn:aws:iot:us-west-2:123456789012:topic/{topic}"),
            me,
        );
        let aws_subscribe = aws_allows(
            &document,
            "iot:Subscribe",
            &format!("arn:aws:iot:us-west-2:123456789012:topicfilter/{topic}"),
            me,
        );
        let aws_receive = aws_allows(
            &document,
            "iot:Receive",
            &format!("arn:aws:iot:us-west-2:123456789012:topic/{topic}"),
            me,
        );
        assert_eq!(aws_publish, may_publish, "AWS policy, publish {topic}");
        assert_eq!(
            aws_subscribe, may_subscribe,
            "AWS policy, subscribe {topic}"
        );
        assert_eq!(aws_receive, may_subscribe, "AWS policy, receive {topic}");
        assert_eq!(
            acl_allows(&acl, "write", topic, me),
            acl_publish,
            "mosquitto ACL, write {topic}"
        );
        assert_eq!(
            acl_allows(&acl, "read", topic, me),
            acl_subscribe,
            "mosquitto ACL, read {topic}"
        );
        granted += usize::from(acl_publish) + usize::from(acl_subscribe);
        granted_aws += usize::from(may_publish) + usize::from(may_subscribe);
    }
    assert_eq!(
        (granted, granted_aws),
        (10, 10),
        "exactly the device's four topics and the provisioning API's six"
    );
    // Connect: only as its own thing.
    let connect = |client: &str| {
        aws_allows(
            &document,
            "iot:Connect",
            &format!("arn:aws:iot:us-west-2:123456789012:client/{client}"),
            me,
        )
    };
    assert!(connect(me));
    assert!(!connect("acorn-0002"));
    assert!(!connect("service:backend"));
}

#[test]
fn the_claim_policy_grants_only_the_provisioning_topics() {
    let document: Value = serde_json::from_str(policy::CLAIM_POLICY_FILE).expect("JSON");
    let any = "whatever";
    let arn = |kind: &str, name: &str| format!("arn:aws:iot:eu-west-1:123456789012:{kind}/{name}");
    for (topic, access) in acorn_mqtt::topics::CLAIM_POLICY {
        let publish = access == acorn_mqtt::Access::Publish;
        assert_eq!(
            aws_allows(&document, "iot:Publish", &arn("topic", topic), any),
            publish,
            "{topic}"
        );
        assert_eq!(
            aws_allows(&document, "iot:Subscribe", &arn("topicfilter", topic), any),
            !publish,
            "{topic}"
        );
        assert_eq!(
            aws_allows(&document, "iot:Receive", &arn("topic", topic), any),
            !publish,
            "{topic}"
        );
    }
    let device_topics = acorn_mqtt::Topics::new("acorn-0001").expect("topics");
    for topic in device_topics.all() {
        for (action, kind) in [
            ("iot:Publish", "topic"),
            ("iot:Subscribe", "topicfilter"),
            ("iot:Receive", "topic"),
        ] {
            assert!(
                !aws_allows(&document, action, &arn(kind, topic), any),
                "{action} {topic}"
            );
        }
    }
    assert!(
        !aws_allows(
            &document,
            "iot:Publish",
            &arn("topic", "$aws/certificates/create/json"),
            any
        ),
        "no server-side keys for claimed devices"
    );
    let connect = |client: &str| aws_allows(&document, "iot:Connect", &arn("client", client), any);
    assert!(connect("claim:acorn-0001"));
    assert!(
        !connect("acorn-0001"),
        "a claim connection cannot take over a device's session"
    );
}

#[test]
fn the_provisioning_template_makes_what_the_aws_signer_makes() {
    let template: Value = serde_json::from_str(policy::PROVISIONING_TEMPLATE_FILE).expect("JSON");
    let thing = &template["Resources"]["thing"];
    assert_eq!(thing["Type"], "AWS::IoT::Thing");
    assert_eq!(thing["Properties"]["ThingName"]["Ref"], "DeviceId");
    let attributes = thing["Properties"]["AttributePayload"]
        .as_object()
        .expect("attributes");
    let mut names: Vec<&str> = attributes.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = acorn_backend::signer::THING_ATTRIBUTES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert_eq!(
        template["Resources"]["policy"]["Properties"]["PolicyName"],
        acorn_backend::signer::DEFAULT_AWS_POLICY_NAME
    );
    assert_eq!(
        template["Resources"]["certificate"]["Properties"]["Status"],
        "ACTIVE"
    );
    // Every Ref names a declared parameter.
    let params = template["Parameters"].as_object().expect("parameters");
    let mut refs = Vec::new();
    fn collect<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("Ref") {
                    out.push(r);
                }
                m.values().for_each(|v| collect(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&template["Resources"], &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(params.contains_key(r), "Ref {r} is not a parameter");
    }
}

#[test]
fn the_glob_matches_like_aws_wildcards() {
    assert!(glob("a*c", "abbc"));
    assert!(glob("a*", "a"));
    assert!(!glob("a*c", "abd"));
    assert!(glob(
        "arn:aws:iot:*:*:client/x",
        "arn:aws:iot:eu-west-1:1:client/x"
    ));
    assert!(!glob("x", "xy"));
}

#[test]
fn the_iam_policy_grants_exactly_the_aws_calls_the_signer_makes() {
    let document: Value = serde_json::from_str(policy::IAM_SERVICE_POLICY_FILE).expect("JSON");
    let mut granted: Vec<&str> = document["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|st| {
            assert_eq!(st["Effect"], "Allow");
            st["Action"]
                .as_array()
                .expect("actions")
                .iter()
                .filter_map(Value::as_str)
        })
        .collect();
    granted.sort_unstable();
    let mut used = acorn_backend::signer::AWS_ACTIONS.to_vec();
    used.sort_unstable();
    assert_eq!(granted, used);
    // The signer's source calls exactly these operations (snake_case SDK calls).
    let source = include_str!("../src/signer/aws.rs");
    for action in acorn_backend::signer::AWS_ACTIONS {
        let op = action.trim_start_matches("iot:");
        let mut snake = String::new();
        for (i, c) in op.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        assert!(
            source.contains(&format!(".{snake}()")),
            "{action} is listed but never called"
        );
    }
}
