//! The device's MQTT topics, exactly as the seed names them.
//!
//! | topic                                  | direction        |
//! |----------------------------------------|------------------|
//! | `acorn-pups/button-press/{device_id}`  | device publishes |
//! | `acorn-pups/status/{device_id}`        | device publishes (status, last will, command replies) |
//! | `acorn-pups/settings/{device_id}`      | device subscribes |
//! | `acorn-pups/commands/{device_id}`      | device subscribes |
//!
//! Command replies go on the status topic, so a device needs exactly these four topics in its
//! AWS IoT policy (or broker ACL).

use alloc::format;
use alloc::string::{String, ToString};

use crate::limits::{check_topic, MAX_CLIENT_ID_BYTES};
use crate::Error;

/// Prefix of button press topics.
pub const TOPIC_BUTTON_PRESS: &str = "acorn-pups/button-press";
/// Prefix of device status topics.
pub const TOPIC_DEVICE_STATUS: &str = "acorn-pups/status";
/// Prefix of settings topics.
pub const TOPIC_SETTINGS: &str = "acorn-pups/settings";
/// Prefix of command topics.
pub const TOPIC_COMMANDS: &str = "acorn-pups/commands";

/// Which subscribed topic an inbound message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundTopic {
    /// `acorn-pups/settings/{device_id}`.
    Settings,
    /// `acorn-pups/commands/{device_id}`.
    Commands,
}

/// The four topics of one device, built once from a validated device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    device_id: String,
    button_press: String,
    status: String,
    settings: String,
    commands: String,
}

/// Checks a device id: 1..=128 bytes of ASCII letters, digits, `_` or `-`
/// (`[A-Za-z0-9_-]{1,128}`). This is the one device-id rule: it makes a topic level, an MQTT
/// client id, an AWS IoT thing name and a certificate CN, and the registration service
/// accepts exactly these ids. Anything outside it (such as [`SERVICE_CLIENT_PREFIX`]) can
/// never be a device.
pub fn check_device_id(device_id: &str) -> Result<(), Error> {
    let ok = !device_id.is_empty()
        && device_id.len() <= MAX_CLIENT_ID_BYTES
        && device_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::DeviceId {
            id: device_id.to_string(),
        })
    }
}

/// What a device may do on one of its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The device publishes here (AWS IoT `iot:Publish`).
    Publish,
    /// The device subscribes and receives here (AWS IoT `iot:Subscribe` + `iot:Receive`).
    Subscribe,
}

/// The device policy: every right a device has, each on `<topic prefix>/<its own id>`
/// (nothing else: not another device's topics, not a wildcard). The broker's rules in the dev
/// stack and the AWS IoT policy are rendered from this table.
pub const DEVICE_POLICY: [(&str, Access); 4] = [
    (TOPIC_BUTTON_PRESS, Access::Publish),
    (TOPIC_DEVICE_STATUS, Access::Publish),
    (TOPIC_SETTINGS, Access::Subscribe),
    (TOPIC_COMMANDS, Access::Subscribe),
];

/// The AWS IoT fleet provisioning template of Acorn Pups devices
/// (`policies/provisioning-template.json`), whose name is part of its MQTT topics.
pub const FLEET_PROVISIONING_TEMPLATE: &str = "acorn-pups";

/// Prefix of the client ids a device uses while it provisions itself with the shared claim
/// certificate (`claim:<device id>`). `:` is outside the device-id alphabet, so a claim
/// connection can never take over a registered device's session.
pub const CLAIM_CLIENT_PREFIX: &str = "claim:";

/// The client id a device uses while it provisions itself by claim: `claim:<device id>`.
pub fn claim_client_id(device_id: &str) -> Result<String, Error> {
    check_device_id(device_id)?;
    Ok(alloc::format!("{CLAIM_CLIENT_PREFIX}{device_id}"))
}

/// The device id a claim connection provisions, from its client id (`claim:<device id>`);
/// `None` for any other client id.
pub fn device_of_claim_client(client_id: &str) -> Option<&str> {
    let id = client_id.strip_prefix(CLAIM_CLIENT_PREFIX)?;
    check_device_id(id).is_ok().then_some(id)
}

/// AWS IoT's fleet-provisioning topic that turns a CSR into a certificate (the device keeps
/// its key); answers arrive on `…/accepted` and `…/rejected`.
pub const TOPIC_CREATE_CERTIFICATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";

/// AWS IoT's fleet-provisioning topic that registers the device through
/// [`FLEET_PROVISIONING_TEMPLATE`]; answers arrive on `…/accepted` and `…/rejected`.
pub const TOPIC_PROVISION: &str = "$aws/provisioning-templates/acorn-pups/provision/json";

/// The claim policy: every right of a connection made with the claim certificate, each on
/// one exact topic (AWS's fleet-provisioning MQTT API, CSR flow only), and nothing on any
/// device topic. `policies/claim-policy.json` is rendered from this table.
pub const CLAIM_POLICY: [(&str, Access); 6] = [
    (TOPIC_CREATE_CERTIFICATE_FROM_CSR, Access::Publish),
    (
        "$aws/certificates/create-from-csr/json/accepted",
        Access::Subscribe,
    ),
    (
        "$aws/certificates/create-from-csr/json/rejected",
        Access::Subscribe,
    ),
    (TOPIC_PROVISION, Access::Publish),
    (
        "$aws/provisioning-templates/acorn-pups/provision/json/accepted",
        Access::Subscribe,
    ),
    (
        "$aws/provisioning-templates/acorn-pups/provision/json/rejected",
        Access::Subscribe,
    ),
];

/// The rights a registered device needs to rotate its certificate: the same six exact topics
/// of the provisioning API as [`CLAIM_POLICY`] (AWS answers them to the requesting connection
/// only, so another device's answers never reach it). The device policy adds them to
/// [`DEVICE_POLICY`]; the local stack grants them under each device's own
/// [`crate::provisioning::local_prefix`].
pub const ROTATION_POLICY: [(&str, Access); 6] = CLAIM_POLICY;

/// Prefix of the client ids (and certificate CNs) of service identities: the backend, the
/// demo's cloud client, a fleet observer. `:` is outside the device-id alphabet, so no
/// registered device can ever hold one of these names (or take over their sessions).
pub const SERVICE_CLIENT_PREFIX: &str = "service:";

/// The client id of the service identity `name` (`service:<name>`), where `name` is 1..=48
/// bytes of lowercase ASCII letters, digits and `-`.
pub fn service_client_id(name: &str) -> Result<String, Error> {
    let ok = (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(alloc::format!("{SERVICE_CLIENT_PREFIX}{name}"))
    } else {
        Err(Error::ServiceName {
            name: name.to_string(),
        })
    }
}

impl Topics {
    /// Builds the topics of `device_id`, checking it and every topic against AWS limits.
    pub fn new(device_id: &str) -> Result<Self, Error> {
        check_device_id(device_id)?;
        let topics = Topics {
            device_id: device_id.to_string(),
            button_press: format!("{TOPIC_BUTTON_PRESS}/{device_id}"),
            status: format!("{TOPIC_DEVICE_STATUS}/{device_id}"),
            settings: format!("{TOPIC_SETTINGS}/{device_id}"),
            commands: format!("{TOPIC_COMMANDS}/{device_id}"),
        };
        for t in topics.all() {
            check_topic(t)?;
        }
        Ok(topics)
    }

    /// The device id the topics were built from.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// `acorn-pups/button-press/{device_id}` (published).
    pub fn button_press(&self) -> &str {
        &self.button_press
    }

    /// `acorn-pups/status/{device_id}` (published; also the last will and command replies).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// `acorn-pups/settings/{device_id}` (subscribed).
    pub fn settings(&self) -> &str {
        &self.settings
    }

    /// `acorn-pups/commands/{device_id}` (subscribed).
    pub fn commands(&self) -> &str {
        &self.commands
    }

    /// The two topics the device subscribes to, settings first.
    pub fn subscriptions(&self) -> [&str; 2] {
        [&self.settings, &self.commands]
    }

    /// All four topics.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.button_press,
            &self.status,
            &self.settings,
            &self.commands,
        ]
    }

    /// Which subscribed topic `topic` is, or [`Error::UnexpectedTopic`].
    pub fn classify(&self, topic: &str) -> Result<InboundTopic, Error> {
        if topic == self.settings {
            Ok(InboundTopic::Settings)
        } else if topic == self.commands {
            Ok(InboundTopic::Commands)
        } else {
            Err(Error::UnexpectedTopic {
                topic: topic.to_string(),
            })
        }
    }
}

/// The two filters a device subscribes to (its settings and commands topics), for any client
/// id (a ping with a device's identity subscribes to the same, so that the persistent session
/// it leaves behind is the device's).
pub fn device_subscription_filters(device_id: &str) -> [String; 2] {
    [
        alloc::format!("{TOPIC_SETTINGS}/{device_id}"),
        alloc::format!("{TOPIC_COMMANDS}/{device_id}"),
    ]
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    #[test]
    fn the_claim_topics_follow_aws_fleet_provisioning_names() {
        assert_eq!(
            TOPIC_PROVISION,
            format!("$aws/provisioning-templates/{FLEET_PROVISIONING_TEMPLATE}/provision/json")
        );
        for request in [TOPIC_CREATE_CERTIFICATE_FROM_CSR, TOPIC_PROVISION] {
            for answer in ["accepted", "rejected"] {
                let topic = format!("{request}/{answer}");
                assert!(
                    CLAIM_POLICY.contains(&(topic.as_str(), Access::Subscribe)),
                    "{topic}"
                );
            }
            assert!(CLAIM_POLICY.contains(&(request, Access::Publish)));
        }
        assert!(check_device_id(&format!("{CLAIM_CLIENT_PREFIX}acorn-0001")).is_err());
        for (topic, _) in CLAIM_POLICY {
            check_topic(topic).expect("within AWS limits");
        }
    }
}
