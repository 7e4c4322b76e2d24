//! The device provisioning MQTT API against AWS's documented payloads (fixtures copied from
//! AWS's documentation: tests/fixtures/aws-provisioning), topics, and bad answers.

use std::collections::BTreeSet;

use acorn_mqtt::provisioning::{
    answer_filters, parse_answer, register_thing_topics, to_json, CreateCertificateFromCsrAccepted,
    CreateCertificateFromCsrRequest, ProvisioningAnswer, ProvisioningRejected,
    RegisterThingAccepted, RegisterThingRequest, CREATE_FROM_CSR, CREATE_FROM_CSR_ACCEPTED,
    CREATE_FROM_CSR_REJECTED,
};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/aws-provisioning/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(json: &[u8]) -> BTreeSet<String> {
    let v: Value = serde_json::from_slice(json).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn our_requests_have_exactly_the_documented_fields() {
    let csr = CreateCertificateFromCsrRequest {
        certificate_signing_request: "string".into(),
    };
    let ours = to_json(&csr).unwrap();
    assert_eq!(
        keys(&ours),
        keys(&fixture("create-certificate-from-csr-request"))
    );
    let back: CreateCertificateFromCsrRequest =
        serde_json::from_slice(&fixture("create-certificate-from-csr-request")).unwrap();
    assert_eq!(back, csr);

    let register = RegisterThingRequest {
        certificate_ownership_token: "string".into(),
        parameters: [("string".to_owned(), "string".to_owned())].into(),
    };
    let ours: Value = serde_json::from_slice(&to_json(&register).unwrap()).unwrap();
    let doc: Value = serde_json::from_slice(&fixture("register-thing-request")).unwrap();
    assert_eq!(ours, doc);
}

#[test]
fn the_documented_answers_parse() {
    let template = "AcornPupsRotation";
    let [_, accepted, rejected] = register_thing_topics(template).unwrap();
    let certificate = parse_answer(
        template,
        CREATE_FROM_CSR_ACCEPTED,
        &fixture("create-certificate-from-csr-accepted"),
    )
    .unwrap();
    assert_eq!(
        certificate,
        Some(ProvisioningAnswer::Certificate(
            CreateCertificateFromCsrAccepted {
                certificate_id: "string".into(),
                certificate_pem: "string".into(),
                certificate_ownership_token: "string".into(),
            }
        ))
    );
    let registered =
        parse_answer(template, &accepted, &fixture("register-thing-accepted")).unwrap();
    assert_eq!(
        registered,
        Some(ProvisioningAnswer::Registered(RegisterThingAccepted {
            device_configuration: [("string".to_owned(), "string".to_owned())].into(),
            thing_name: "string".into(),
        }))
    );
    for topic in [CREATE_FROM_CSR_REJECTED, rejected.as_str()] {
        let answer = parse_answer(template, topic, &fixture("rejected")).unwrap();
        let Some(ProvisioningAnswer::Rejected(r)) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(
            r,
            ProvisioningRejected {
                status_code: 400,
                error_code: "string".into(),
                error_message: "string".into()
            }
        );
        assert!(!r.is_retryable());
    }
    // Other topics are not provisioning answers.
    assert_eq!(
        parse_answer(template, "acorn-pups/commands/acorn-0001", b"{}").unwrap(),
        None
    );
}

#[test]
fn topics_follow_aws_and_refuse_wildcards_in_template_names() {
    assert_eq!(CREATE_FROM_CSR, "$aws/certificates/create-from-csr/json");
    assert_eq!(
        CREATE_FROM_CSR_ACCEPTED,
        format!("{CREATE_FROM_CSR}/accepted")
    );
    assert_eq!(
        CREATE_FROM_CSR_REJECTED,
        format!("{CREATE_FROM_CSR}/rejected")
    );
    // The template the device policy names has the topic the policy names.
    assert_eq!(
        register_thing_topics(acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE).unwrap()[0],
        acorn_mqtt::topics::TOPIC_PROVISION
    );
    assert_eq!(
        register_thing_topics("AcornPups").unwrap()[0],
        "$aws/provisioning-templates/AcornPups/provision/json"
    );
    assert_eq!(answer_filters("AcornPups").unwrap().len(), 4);
    for bad in ["", "a/b", "a+", "#", &"x".repeat(37), "a b"] {
        let err = register_thing_topics(bad).unwrap_err();
        assert!(err.to_string().contains("1..=36"), "{bad}: {err}");
    }
}

#[test]
fn the_local_stack_prefixes_every_topic_with_the_device_id() {
    use acorn_mqtt::provisioning::{local_prefix, ProvisioningTopics};
    let topics = ProvisioningTopics::new(&local_prefix("acorn-0001"), "acorn-pups").unwrap();
    assert_eq!(
        topics.create_from_csr[0],
        "acorn-local/acorn-0001/$aws/certificates/create-from-csr/json"
    );
    assert_eq!(
        topics.register[1],
        "acorn-local/acorn-0001/$aws/provisioning-templates/acorn-pups/provision/json/accepted"
    );
    // An answer on another device's topic is not this device's.
    let other = ProvisioningTopics::new(&local_prefix("acorn-0002"), "acorn-pups").unwrap();
    let body = br#"{"certificateId":"a","certificatePem":"b","certificateOwnershipToken":"c"}"#;
    assert!(topics
        .parse_answer(&other.create_from_csr[1], body)
        .unwrap()
        .is_none());
    assert!(topics
        .parse_answer(&topics.create_from_csr[1], body)
        .unwrap()
        .is_some());
    for bad in ["no-slash", "a/+/", "#/", "$aws/"] {
        assert!(ProvisioningTopics::new(bad, "acorn-pups").is_err(), "{bad}");
    }
}

#[test]
fn bad_answers_say_what_is_wrong() {
    for (payload, text) in [
        (&b"{}"[..], "missing field"),
        (b"not json", "not the documented JSON"),
        (&vec![b' '; 17 * 1024][..], "over the"),
    ] {
        let err = parse_answer("T", CREATE_FROM_CSR_ACCEPTED, payload).unwrap_err();
        assert!(err.to_string().contains(text), "{err}");
    }
    let throttled: ProvisioningRejected = serde_json::from_str(
        r#"{"statusCode":429,"errorCode":"ThrottlingException","errorMessage":"Rate exceeded"}"#,
    )
    .unwrap();
    assert!(throttled.is_retryable());
}
