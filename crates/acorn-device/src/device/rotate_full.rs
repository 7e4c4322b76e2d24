//! The certificate rotation state machine (see [`crate::rotation`] for the steps and who does
//! what).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use acorn_mqtt::provisioning::{
    to_json, CreateCertificateFromCsrRequest, ProvisioningAnswer, ProvisioningTopics,
    RegisterThingRequest,
};
use acorn_mqtt::{
    CommandResult, ConnectionStatus, DeviceStatus, DeviceStatusMessage, QoS, RotationState,
};
use rand_core::RngCore;

use super::{Device, Phase};
use crate::io::{Action, Publish, Tag};
use crate::notice::Notice;
use crate::presses::PressStore;
use crate::rotation::{
    RotateError, RotationConfig, RotationInput, RotationRequest, RotationTrigger,
};
use crate::store::SettingsStore;

/// Where a rotation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Idle,
    MakingKey {
        deadline: u64,
    },
    /// The CSR waits to be sent (when online with the answer topics subscribed), then for
    /// the answer.
    AwaitingCertificate {
        csr: String,
        sent: bool,
        deadline: u64,
    },
    Staging {
        token: String,
        certificate_id: String,
        deadline: u64,
    },
    AwaitingRegistration {
        token: String,
        certificate_id: String,
        sent: bool,
        deadline: u64,
    },
    Trial {
        certificate_id: String,
        deadline: u64,
    },
    Committing {
        certificate_id: String,
        deadline: u64,
    },
    Discarding {
        reason: String,
        deadline: u64,
    },
}

/// The rotation's state beside the device's.
#[derive(Debug, Clone)]
pub(super) struct Rotator {
    config: Option<RotationConfig>,
    /// The API's topics (checked with the configuration).
    topics: Option<ProvisioningTopics>,
    step: Step,
    trigger: Option<RotationTrigger>,
    failures: u32,
    retry_at: Option<u64>,
    answers_subscribed: bool,
    subscribe_pending: bool,
    /// The certificate an expiry-triggered rotation ended on: when it too has fewer days left
    /// than `days_before` (a CA that issues short certificates, or `days_before` above their
    /// lifetime), the expiry trigger leaves it alone instead of rotating again and again.
    expiry_result: Option<String>,
    /// A commit failed after the trial passed: only a restart finishes it, so nothing
    /// rotates until then.
    commit_pending: bool,
}

impl Rotator {
    pub(super) fn new(config: Option<RotationConfig>) -> Self {
        let topics = config
            .as_ref()
            .and_then(|c| ProvisioningTopics::new(&c.topic_prefix, &c.template).ok());
        Self {
            config,
            topics,
            step: Step::Idle,
            trigger: None,
            failures: 0,
            retry_at: None,
            answers_subscribed: false,
            subscribe_pending: false,
            expiry_result: None,
            commit_pending: false,
        }
    }

    /// Whether a rotation is under way.
    pub(super) fn is_rotating(&self) -> bool {
        self.step != Step::Idle
    }

    /// Whether a SUBACK is for the answer topics' SUBSCRIBE.
    pub(super) fn takes_suback(&self) -> bool {
        self.subscribe_pending
    }

    /// The connection is gone: answers to requests sent on it will not come (AWS answers the
    /// requesting connection only), so requests go again on the next one.
    pub(super) fn connection_lost(&mut self) {
        self.answers_subscribed = false;
        self.subscribe_pending = false;
        match &mut self.step {
            Step::AwaitingCertificate { sent, .. } | Step::AwaitingRegistration { sent, .. } => {
                *sent = false
            }
            _ => {}
        }
    }

    pub(super) fn next_timer(&self) -> Option<u64> {
        let deadline = match &self.step {
            Step::Idle => None,
            Step::MakingKey { deadline }
            | Step::AwaitingCertificate { deadline, .. }
            | Step::Staging { deadline, .. }
            | Step::AwaitingRegistration { deadline, .. }
            | Step::Trial { deadline, .. }
            | Step::Committing { deadline, .. }
            | Step::Discarding { deadline, .. } => Some(*deadline),
        };
        [deadline, self.retry_at].into_iter().flatten().min()
    }

    fn config(&self) -> Option<&RotationConfig> {
        self.config.as_ref()
    }
}

impl<R: RngCore, S: SettingsStore, Q: PressStore> Device<R, S, Q> {
    /// Starts a certificate rotation now (e.g. `acorn device rotate`); it waits for the
    /// connection if offline.
    pub fn rotate(&mut self, now: crate::Now) -> Result<(), RotateError> {
        if self.phase != Phase::Running {
            return Err(RotateError::Stopped);
        }
        self.observe(now);
        self.start_rotation(RotationTrigger::Local)?;
        self.pump();
        Ok(())
    }

    /// What the driver answers to a [`RotationRequest`].
    pub fn rotation(&mut self, now: crate::Now, input: RotationInput) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.observe(now);
        let t = self.mono_ms;
        let timeout = self.rotation_timeouts().0;
        let step = core::mem::replace(&mut self.rotator.step, Step::Idle);
        match (step, input) {
            (Step::MakingKey { .. }, RotationInput::Csr { pem }) => {
                self.rotator.step = Step::AwaitingCertificate {
                    csr: pem,
                    sent: false,
                    deadline: t.saturating_add(timeout),
                };
                self.send_rotation_request();
            }
            (Step::MakingKey { .. }, RotationInput::KeyFailed { reason }) => {
                self.rotation_failed(format!("no new key could be made: {reason}"));
            }
            (
                Step::Staging {
                    token,
                    certificate_id,
                    ..
                },
                RotationInput::Staged,
            ) => {
                self.rotator.step = Step::AwaitingRegistration {
                    token,
                    certificate_id,
                    sent: false,
                    deadline: t.saturating_add(timeout),
                };
                self.send_rotation_request();
            }
            (Step::Staging { .. }, RotationInput::StageRefused { reason }) => {
                self.rotation_failed(format!("the new certificate was refused: {reason}"));
            }
            (Step::Committing { .. }, RotationInput::Committed { certificate }) => {
                self.certificate = certificate;
                self.rotator.failures = 0;
                self.rotator.retry_at = None;
                let id = self.certificate.fingerprint.clone().unwrap_or_default();
                if matches!(self.rotator.trigger, Some(RotationTrigger::Expiry { .. })) {
                    self.rotator.expiry_result = Some(id.clone());
                }
                self.notice(Notice::RotationCommitted { certificate_id: id });
                self.rotation_answer(RotationState::Committed, None);
                self.rotator.trigger = None;
            }
            (Step::Committing { .. }, RotationInput::CommitFailed { reason }) => {
                // The candidate works (the trial passed) but could not be made the active
                // identity. A commit under way cannot be rolled back (the copy may be half
                // done) and a new rotation could not stage: the next boot finishes it. No retry
                // until then: each would mint a certificate that can never be stored.
                let reason = format!(
                    "the new certificate works but could not be stored as the active one \
                     ({reason}); the commit finishes at the next restart"
                );
                self.rotator.step = Step::Idle;
                self.rotator.retry_at = None;
                self.rotator.commit_pending = true;
                self.notice(Notice::RotationFailed {
                    reason: reason.clone(),
                });
                self.rotation_answer(RotationState::Failed, Some(reason));
                self.rotator.trigger = None;
            }
            (Step::Discarding { reason, .. }, RotationInput::Discarded) => {
                self.notice(Notice::RotationRolledBack {
                    reason: reason.clone(),
                });
                self.rotation_answer(RotationState::RolledBack, Some(reason));
                self.schedule_rotation_retry();
            }
            (step, input) => {
                self.rotator.step = step;
                self.notice(Notice::RotationIgnored {
                    what: format!("{input:?}"),
                });
            }
        }
        self.pump();
    }

    /// (step timeout, trial timeout).
    fn rotation_timeouts(&self) -> (u64, u64) {
        self.rotator.config().map_or((60_000, 120_000), |c| {
            (c.step_timeout_ms, c.trial_timeout_ms)
        })
    }

    pub(super) fn start_rotation(&mut self, trigger: RotationTrigger) -> Result<(), RotateError> {
        if self.rotator.config.is_none() {
            return Err(RotateError::NotConfigured);
        }
        if self.rotator.is_rotating() {
            return Err(RotateError::AlreadyRotating);
        }
        if self.rotator.commit_pending {
            return Err(RotateError::CommitPending);
        }
        let timeout = self.rotation_timeouts().0;
        self.rotator.retry_at = None;
        self.notice(Notice::RotationStarted {
            trigger: trigger.clone(),
        });
        self.rotator.trigger = Some(trigger);
        self.rotator.step = Step::MakingKey {
            deadline: self.mono_ms.saturating_add(timeout),
        };
        self.emit(Action::Rotation(RotationRequest::MakeKey));
        self.rotation_answer(RotationState::Started, None);
        Ok(())
    }

    /// The `rotate-certificate` command: answered at once (started, already rotating, or
    /// not possible); the outcome is answered later with the same `requestId`.
    pub(super) fn rotate_command(&mut self, request_id: &str) {
        let trigger = RotationTrigger::Command {
            request_id: request_id.to_string(),
        };
        match self.start_rotation(trigger) {
            Ok(()) => {}
            Err(RotateError::AlreadyRotating) => {
                let mut reply =
                    self.rotation_reply(Some(request_id), RotationState::AlreadyRotating);
                reply.result = Some(CommandResult::Error);
                reply.error = Some("already rotating".into());
                self.queue_reply(&reply);
            }
            Err(e) => {
                let mut reply = self.rotation_reply(Some(request_id), RotationState::Failed);
                reply.result = Some(CommandResult::Error);
                reply.error = Some(e.to_string());
                self.queue_reply(&reply);
            }
        }
    }

    /// A status answer about the rotation (`command: rotate-certificate`).
    fn rotation_reply(
        &self,
        request_id: Option<&str>,
        state: RotationState,
    ) -> DeviceStatusMessage {
        let mut reply = DeviceStatusMessage::reply_ok(
            self.topics.device_id(),
            self.unix_ms,
            &self.firmware_version,
            request_id,
            "rotate-certificate",
        );
        reply.rotation = Some(state);
        reply.certificate_id = self.certificate.fingerprint.clone();
        reply
    }

    fn rotation_answer(&mut self, state: RotationState, error: Option<String>) {
        let request_id = match &self.rotator.trigger {
            Some(RotationTrigger::Command { request_id }) => Some(request_id.clone()),
            _ => None,
        };
        let mut reply = self.rotation_reply(request_id.as_deref(), state);
        if let Some(error) = error {
            reply.status = DeviceStatus::Error;
            reply.result = Some(CommandResult::Error);
            reply.error = Some(error);
        }
        self.queue_reply(&reply);
    }

    /// A step failed: roll back when a candidate may exist, else report and retry later.
    fn rotation_failed(&mut self, reason: String) {
        let candidate_may_exist = matches!(
            self.rotator.step,
            Step::AwaitingRegistration { .. } | Step::Trial { .. } | Step::Committing { .. }
        );
        if candidate_may_exist {
            let deadline = self.mono_ms.saturating_add(self.rotation_timeouts().0);
            self.rotator.step = Step::Discarding {
                reason: reason.clone(),
                deadline,
            };
            self.emit(Action::Rotation(RotationRequest::Discard { reason }));
            return;
        }
        self.rotator.step = Step::Idle;
        self.notice(Notice::RotationFailed {
            reason: reason.clone(),
        });
        self.rotation_answer(RotationState::Failed, Some(reason));
        self.schedule_rotation_retry();
    }

    fn schedule_rotation_retry(&mut self) {
        self.rotator.step = Step::Idle;
        let Some(config) = self.rotator.config().cloned() else {
            return;
        };
        self.rotator.failures = self.rotator.failures.saturating_add(1);
        let give_up = matches!(self.rotator.trigger, Some(RotationTrigger::Command { .. }))
            && self.rotator.failures >= config.command_attempts;
        if give_up || self.rotator.trigger.is_none() {
            self.rotator.trigger = None;
            self.rotator.retry_at = None;
            self.rotator.failures = 0;
            return;
        }
        let shift = self.rotator.failures.saturating_sub(1).min(20);
        let delay = config
            .retry_base_ms
            .saturating_mul(1u64 << shift)
            .min(config.retry_max_ms);
        self.rotator.retry_at = Some(self.mono_ms.saturating_add(delay));
    }

    /// Timers: step deadlines, retries, and the expiry trigger.
    pub(super) fn rotation_tick(&mut self) {
        let t = self.mono_ms;
        let expired = match &self.rotator.step {
            Step::Idle => None,
            Step::MakingKey { deadline } => (t >= *deadline).then_some("no CSR from the driver"),
            Step::AwaitingCertificate { deadline, .. } => {
                (t >= *deadline).then_some("no answer to CreateCertificateFromCsr")
            }
            Step::Staging { deadline, .. } => {
                (t >= *deadline).then_some("the new certificate was not stored in time")
            }
            Step::AwaitingRegistration { deadline, .. } => {
                (t >= *deadline).then_some("no answer to RegisterThing")
            }
            Step::Trial { deadline, .. } => (t >= *deadline)
                .then_some("the trial connection with the new certificate did not come up in time"),
            Step::Committing { deadline, .. } => {
                (t >= *deadline).then_some("the commit did not finish in time")
            }
            Step::Discarding { deadline, .. } => (t >= *deadline).then_some(""),
        };
        match expired {
            Some("") => {
                // The driver never confirmed the roll-back: report it anyway.
                if let Step::Discarding { reason, .. } =
                    core::mem::replace(&mut self.rotator.step, Step::Idle)
                {
                    self.notice(Notice::RotationRolledBack {
                        reason: reason.clone(),
                    });
                    self.rotation_answer(RotationState::RolledBack, Some(reason));
                    self.schedule_rotation_retry();
                }
            }
            Some(why) => {
                let secs = match &self.rotator.step {
                    Step::Trial { .. } => self.rotation_timeouts().1,
                    _ => self.rotation_timeouts().0,
                } / 1000;
                self.rotation_failed(format!("{why} (waited {secs} s)"));
            }
            None => {}
        }
        if self.rotator.retry_at.is_some_and(|at| t >= at) && !self.rotator.is_rotating() {
            self.rotator.retry_at = None;
            if let Some(trigger) = self.rotator.trigger.clone() {
                let _ = self.start_rotation(trigger);
            }
        }
        self.rotation_expiry_check();
    }

    /// The expiry trigger: only when idle, with nothing scheduled, and a synced clock.
    fn rotation_expiry_check(&mut self) {
        let due = self.rotator.config().map(|c| i64::from(c.days_before));
        if let (Some(days_before), Some(days_left)) =
            (due, self.certificate.days_left(self.unix_ms))
        {
            let already_renewed = self.rotator.expiry_result.is_some()
                && self.rotator.expiry_result == self.certificate.fingerprint;
            if days_left < days_before
                && !already_renewed
                && !self.rotator.is_rotating()
                && self.rotator.retry_at.is_none()
                && self.rotator.trigger.is_none()
            {
                let _ = self.start_rotation(RotationTrigger::Expiry { days_left });
            }
        }
    }

    /// Sends what the current step waits to send, once online with the answer topics
    /// subscribed (subscribing first when needed).
    pub(super) fn send_rotation_request(&mut self) {
        let needs_send = matches!(
            self.rotator.step,
            Step::AwaitingCertificate { sent: false, .. }
                | Step::AwaitingRegistration { sent: false, .. }
        );
        let online = *self.session.status() == ConnectionStatus::Connected
            && !self.online_pending
            && !self.subscribing;
        if !needs_send || !online {
            return;
        }
        let Some(topics) = self.rotator.topics.clone() else {
            return;
        };
        if !self.rotator.answers_subscribed {
            if !self.rotator.subscribe_pending {
                self.rotator.subscribe_pending = true;
                self.emit(Action::Subscribe(topics.answer_filters()));
            }
            return;
        }
        let mut parameters = self
            .rotator
            .config()
            .map(|c| c.parameters.clone())
            .unwrap_or_default();
        parameters.insert("DeviceId".into(), self.topics.device_id().to_string());
        let (topic, payload) = match &mut self.rotator.step {
            Step::AwaitingCertificate { csr, sent, .. } => {
                *sent = true;
                let request = CreateCertificateFromCsrRequest {
                    certificate_signing_request: csr.clone(),
                };
                (topics.create_from_csr[0].clone(), to_json(&request))
            }
            Step::AwaitingRegistration { token, sent, .. } => {
                *sent = true;
                let request = RegisterThingRequest {
                    certificate_ownership_token: token.clone(),
                    parameters,
                };
                (topics.register[0].clone(), to_json(&request))
            }
            _ => return,
        };
        match payload {
            Ok(payload) => self.emit(Action::Publish(Publish {
                tag: Tag::Rotation,
                topic,
                payload,
                qos: QoS::AtLeastOnce,
                retransmit: false,
            })),
            Err(e) => self.rotation_failed(e.to_string()),
        }
    }

    /// The SUBACK of the answer topics.
    pub(super) fn rotation_suback(&mut self, granted: bool) {
        self.rotator.subscribe_pending = false;
        if granted {
            self.rotator.answers_subscribed = true;
            self.send_rotation_request();
        } else {
            self.rotation_failed(
                "the broker refused the subscription to the provisioning answer topics: the device policy must allow them"
                    .into(),
            );
        }
    }

    /// A message on a provisioning answer topic; `false` when `topic` is not one.
    pub(super) fn rotation_message(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(topics) = self.rotator.topics.as_ref() else {
            return false;
        };
        let answer = match topics.parse_answer(topic, payload) {
            Ok(Some(answer)) => answer,
            Ok(None) => return false,
            Err(e) => {
                if matches!(
                    self.rotator.step,
                    Step::AwaitingCertificate { sent: true, .. }
                        | Step::AwaitingRegistration { sent: true, .. }
                ) {
                    self.rotation_failed(e.to_string());
                }
                return true;
            }
        };
        let t = self.mono_ms;
        let (timeout, trial_timeout) = self.rotation_timeouts();
        let step = core::mem::replace(&mut self.rotator.step, Step::Idle);
        match (step, answer) {
            (
                Step::AwaitingCertificate { sent: true, .. },
                ProvisioningAnswer::Certificate(cert),
            ) => {
                self.rotator.step = Step::Staging {
                    token: cert.certificate_ownership_token,
                    certificate_id: cert.certificate_id.clone(),
                    deadline: t.saturating_add(timeout),
                };
                self.emit(Action::Rotation(RotationRequest::StageCandidate {
                    certificate_pem: cert.certificate_pem,
                    certificate_id: cert.certificate_id,
                }));
            }
            (
                Step::AwaitingRegistration {
                    certificate_id,
                    sent: true,
                    ..
                },
                ProvisioningAnswer::Registered(registered),
            ) => {
                if registered.thing_name != self.topics.device_id() {
                    self.rotator.step = Step::AwaitingRegistration {
                        certificate_id,
                        token: String::new(),
                        sent: true,
                        deadline: t,
                    };
                    self.rotation_failed(format!(
                        "RegisterThing provisioned the thing {:?}, not this device",
                        registered.thing_name
                    ));
                    return true;
                }
                self.rotator.step = Step::Trial {
                    certificate_id,
                    deadline: t.saturating_add(trial_timeout),
                };
                self.emit(Action::Rotation(RotationRequest::UseCandidate));
                self.notice(Notice::RotationTrial);
                // The trial: a new connection with the candidate.
                self.session.handle(t, acorn_mqtt::Event::Reconnect);
            }
            (
                step @ Step::AwaitingCertificate { sent: true, .. },
                ProvisioningAnswer::Rejected(r),
            )
            | (
                step @ Step::AwaitingRegistration { sent: true, .. },
                ProvisioningAnswer::Rejected(r),
            ) => {
                let api = if matches!(step, Step::AwaitingCertificate { .. }) {
                    "CreateCertificateFromCsr"
                } else {
                    "RegisterThing"
                };
                self.rotator.step = step;
                self.rotation_failed(format!(
                    "{api} rejected: {} {}: {}",
                    r.status_code, r.error_code, r.error_message
                ));
            }
            (step, _) => {
                self.rotator.step = step;
                self.notice(Notice::RotationIgnored {
                    what: format!("an answer on {topic} the rotation does not wait for"),
                });
            }
        }
        true
    }

    /// `online` went out: during a trial, the candidate works — commit it; otherwise send
    /// what waits, or start a rotation the certificate's end calls for.
    pub(super) fn rotation_online(&mut self) {
        if !self.rotator.is_rotating() {
            self.rotation_expiry_check();
        }
        if let Step::Trial { certificate_id, .. } = &self.rotator.step {
            let certificate_id = certificate_id.clone();
            self.rotator.step = Step::Committing {
                certificate_id,
                deadline: self.mono_ms.saturating_add(self.rotation_timeouts().0),
            };
            self.emit(Action::Rotation(RotationRequest::Commit));
        } else {
            self.send_rotation_request();
        }
    }

    /// A connect attempt failed or the connection dropped: during a trial, roll back.
    pub(super) fn rotation_connection_failed(&mut self, why: &str) {
        self.rotator.connection_lost();
        if matches!(self.rotator.step, Step::Trial { .. }) {
            self.rotation_failed(format!(
                "the trial connection with the new certificate failed: {why}"
            ));
        }
    }

    /// Whether a rotation is under way.
    pub fn is_rotating(&self) -> bool {
        self.rotator.is_rotating()
    }

    /// The answer-topic filters a rotation subscribes to (for a driver's ACL checks).
    pub fn rotation_filters(&self) -> Vec<String> {
        self.rotator
            .topics
            .as_ref()
            .map(ProvisioningTopics::answer_filters)
            .unwrap_or_default()
    }
}
