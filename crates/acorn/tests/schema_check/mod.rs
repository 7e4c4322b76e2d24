//! The JSON Schemas of `docs/schemas` (draft 2020-12), checked with the `jsonschema` crate
//! against the messages a test sees: every schema is first checked against the draft's
//! meta-schema, then each message against the schema of its topic.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// Which message a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `acorn-pups/button-press/{deviceId}`.
    ButtonPress,
    /// `acorn-pups/status/{deviceId}`: presence, replies, heartbeats.
    Status,
    /// `acorn-pups/settings/{deviceId}`.
    SettingsUpdate,
    /// `acorn-pups/commands/{deviceId}`.
    Command,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::ButtonPress,
        Kind::Status,
        Kind::SettingsUpdate,
        Kind::Command,
    ];

    /// The schema's file name in `docs/schemas`.
    pub fn file(self) -> &'static str {
        match self {
            Kind::ButtonPress => "button-press.json",
            Kind::Status => "status.json",
            Kind::SettingsUpdate => "settings-update.json",
            Kind::Command => "command.json",
        }
    }

    /// The kind of the message on `topic`.
    pub fn of_topic(topic: &str) -> Option<Kind> {
        let kind = match topic.split('/').nth(1)? {
            "button-press" => Kind::ButtonPress,
            "status" => Kind::Status,
            "settings" => Kind::SettingsUpdate,
            "commands" => Kind::Command,
            _ => return None,
        };
        topic.starts_with("acorn-pups/").then_some(kind)
    }
}

/// `docs/schemas` of this repository.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas")
}

/// The four validators.
pub struct Schemas {
    validators: Vec<(Kind, jsonschema::Validator)>,
}

impl Schemas {
    /// Reads the schemas, checks each against the draft 2020-12 meta-schema and builds them.
    pub fn load() -> Self {
        let validators = Kind::ALL
            .into_iter()
            .map(|kind| {
                let path = dir().join(kind.file());
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let schema: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(
                    schema["$schema"],
                    "https://json-schema.org/draft/2020-12/schema",
                    "{}",
                    path.display()
                );
                if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
                    panic!("{} is not a valid 2020-12 schema: {e}", path.display());
                }
                let validator = jsonschema::draft202012::new(&schema)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (kind, validator)
            })
            .collect();
        Self { validators }
    }

    fn validator(&self, kind: Kind) -> &jsonschema::Validator {
        &self
            .validators
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("every kind is loaded")
            .1
    }

    /// The schema's complaints about `message` (empty: it validates).
    pub fn errors(&self, kind: Kind, message: &Value) -> Vec<String> {
        self.validator(kind)
            .iter_errors(message)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect()
    }

    /// Panics, naming the schema and every complaint, unless `message` validates.
    pub fn check(&self, kind: Kind, message: &Value) {
        let errors = self.errors(kind, message);
        assert!(
            errors.is_empty(),
            "{message} does not validate against docs/schemas/{}: {errors:#?}",
            kind.file()
        );
    }

    /// Checks a payload seen on `topic` against the schema of its topic; its JSON.
    pub fn check_payload(&self, topic: &str, payload: &[u8]) -> Value {
        let kind = Kind::of_topic(topic).unwrap_or_else(|| panic!("no schema for topic {topic}"));
        let message: Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
            panic!(
                "not JSON on {topic}: {e}: {}",
                String::from_utf8_lossy(payload)
            )
        });
        self.check(kind, &message);
        message
    }
}
