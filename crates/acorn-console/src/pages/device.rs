//! The Device page: live state and history, presses, the settings form, commands, the
//! certificate, and revocation.

use acorn_backend::registry::history::CertificateRecord;
use acorn_backend::registry::{DeviceRecord, RegistrationStatus};
use acorn_mqtt::settings::{
    COOLDOWN_MS_RANGE, HEARTBEAT_SECONDS_RANGE, LED_BRIGHTNESS_RANGE, SOUND_VOLUME_RANGE,
};
use acorn_mqtt::DeviceSettings;
use maud::{html, Markup};

use super::live::{describe_press, describe_status};
use super::{csrf_field, page, time_ms, time_s, Nav};
use crate::auth::Session;
use crate::cert::CertInfo;
use crate::fleet::DeviceLive;

/// The commands the page offers, with their buttons' labels.
pub const COMMANDS: [(&str, &str); 3] = [
    ("get-status", "Get status"),
    ("reconnect", "Reconnect"),
    ("rotate-certificate", "Rotate certificate"),
];

/// What the page shows.
pub struct View<'a> {
    /// The registry's record.
    pub record: &'a DeviceRecord,
    /// What the broker said.
    pub live: &'a DeviceLive,
    /// The certificate's particulars.
    pub cert: Option<&'a CertInfo>,
    /// The device's other certificates (rotations), latest first.
    pub history: &'a [CertificateRecord],
    /// A line about the last action (e.g. a request sent).
    pub notice: Option<String>,
}

/// The page.
pub fn render(session: &Session, v: &View<'_>) -> Markup {
    let id = &v.record.device_id;
    let revoked = v.record.status == RegistrationStatus::Revoked;
    let state = if revoked { "revoked" } else { v.live.state() };
    let reported = v.live.statuses.iter().find_map(|(_, s)| s.settings);
    let settings = reported.unwrap_or_default();
    let action = |what: &str| format!("/devices/{id}/{what}");
    let main = html! {
        h1 { "Device " code { (id) } " " span.state #device-state data-state=(state) { (state) } }
        @if let Some(notice) = &v.notice {
            p.notice role="status" #notice { (notice) }
        }
        div.grid {
            section.card {
                h2 { "Registration" }
                dl {
                    dt { "Serial number" } dd { (v.record.serial_number) }
                    dt { "MAC address" } dd { (v.record.mac_address) }
                    dt { "Firmware" } dd #firmware { (v.live.last_status.as_ref().map_or(&v.record.firmware_version, |s| &s.firmware_version)) }
                    dt { "Registered" } dd { (time_s(v.record.created_at)) }
                    dt { "Status" } dd { (v.record.status.as_str()) @if let Some(at) = v.record.revoked_at { " since " (time_s(at)) } }
                    dt { "Last seen" } dd { (v.live.last_seen_ms.map(time_ms).unwrap_or_else(|| "—".into())) }
                }
            }
            section.card {
                h2 { "Certificate" }
                dl {
                    dt { "Certificate id" } dd.mono { (v.record.certificate_id) }
                    dt { "Serial" } dd.mono { (v.record.certificate_serial) }
                    @if let Some(arn) = &v.record.certificate_arn { dt { "ARN" } dd.mono { (arn) } }
                    @if let Some(c) = v.cert {
                        dt { "Subject" } dd { (c.subject) }
                        dt { "Issuer" } dd { (c.issuer) }
                        dt { "Valid" } dd { (time_s(c.not_before)) " to " (time_s(c.not_after)) }
                        dt { "Days left" } dd #days-left { (c.days_left(super::now_s())) }
                    }
                    dt { "Rotation" } dd { (v.live.rotation.map(super::rotation_name).unwrap_or_else(|| "none reported".into())) }
                }
                h3 { "History" }
                @if v.history.is_empty() {
                    p.hint { "No other certificate: this one is the device's first." }
                } @else {
                    table #certificate-history {
                        thead { tr { th { "Certificate id" } th { "State" } th { "Changed" } } }
                        tbody {
                            @for c in v.history {
                                tr {
                                    td.mono { (c.certificate_id.get(..16).unwrap_or(&c.certificate_id)) "…" }
                                    td { (c.state.as_str()) @if let Some(at) = c.revoked_at { ", revoked " (time_s(at)) } }
                                    td { (time_s(c.updated_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !revoked {
            div.grid {
                section.card {
                    h2 { "Settings" }
                    p.hint { "Empty fields stay as they are. Checked as the device checks them, then sent on its settings topic; its answer appears under Answers." }
                    form #settings method="post" action=(action("settings")) {
                        (csrf_field(session))
                        label for="soundEnabled" { "Sound" }
                        select #soundEnabled name="soundEnabled" {
                            option value="" { "unchanged (" (if settings.sound_enabled { "on" } else { "off" }) ")" }
                            option value="true" { "on" }
                            option value="false" { "off" }
                        }
                        (number("soundVolume", "Volume", SOUND_VOLUME_RANGE.0.into(), SOUND_VOLUME_RANGE.1.into(), settings.sound_volume.into()))
                        (number("ledBrightness", "LED brightness %", LED_BRIGHTNESS_RANGE.0.into(), LED_BRIGHTNESS_RANGE.1.into(), settings.led_brightness.into()))
                        (number("cooldownMs", "Cooldown ms", COOLDOWN_MS_RANGE.0, COOLDOWN_MS_RANGE.1, settings.cooldown_ms))
                        (number("heartbeatSeconds", "Heartbeat s", HEARTBEAT_SECONDS_RANGE.0, HEARTBEAT_SECONDS_RANGE.1, settings.heartbeat_seconds))
                        button type="submit" #send-settings { "Send settings" }
                    }
                    (current(reported.as_ref()))
                }
                section.card {
                    h2 { "Commands" }
                    @for (command, label) in COMMANDS {
                        form.inline method="post" action=(action("command")) {
                            (csrf_field(session))
                            input type="hidden" name="command" value=(command);
                            button type="submit" id={ "command-" (command) } { (label) }
                        }
                    }
                    h2 { "Revoke" }
                    p.hint { "Revoking puts the certificate on the CRL and closes the device's connection; it cannot be undone. Type the device id to confirm." }
                    form #revoke method="post" action=(action("revoke")) {
                        (csrf_field(session))
                        input #confirm type="text" name="confirm" placeholder=(id) autocomplete="off" aria-label="Device id, to confirm";
                        button.danger type="submit" #revoke-button { "Revoke" }
                    }
                }
            }
        }
        section {
            h2 { "Answers" }
            table #answers {
                thead { tr { th { "Received" } th { "Answer" } } }
                tbody {
                    @for (at, s) in v.live.statuses.iter().filter(|(_, s)| s.request_id.is_some()) {
                        tr { td { (time_ms(*at)) } td.summary { (describe_status(s)) } }
                    }
                }
            }
        }
        div.grid {
            section {
                h2 { "Status history" }
                table #statuses {
                    thead { tr { th { "Received" } th { "Status" } } }
                    tbody {
                        @for (at, s) in &v.live.statuses {
                            tr { td { (time_ms(*at)) } td.summary { (describe_status(s)) } }
                        }
                    }
                }
            }
            section {
                h2 { "Recent presses" }
                table #presses {
                    thead { tr { th { "Pressed" } th { "Press" } } }
                    tbody {
                        @for (_, p) in &v.live.presses {
                            tr { td { (p.timestamp) } td.summary { (describe_press(p)) } }
                        }
                    }
                }
            }
        }
    };
    page(
        id,
        Nav::Device,
        Some(session),
        Some("device"),
        html! {
            div #device data-device=(id) { (main) }
        },
    )
}

fn number(name: &str, label: &str, min: u32, max: u32, now: u32) -> Markup {
    html! {
        label for=(name) { (label) }
        input id=(name) type="number" name=(name) min=(min) max=(max) placeholder=(now);
    }
}

/// The settings the device last reported (the placeholders show the defaults until then).
fn current(reported: Option<&DeviceSettings>) -> Markup {
    html! {
        @if let Some(s) = reported {
            p.hint { "Last reported: soundEnabled " (s.sound_enabled) ", soundVolume " (s.sound_volume)
                ", ledBrightness " (s.led_brightness) ", cooldownMs " (s.cooldown_ms)
                ", heartbeatSeconds " (s.heartbeat_seconds) }
        } @else {
            p.hint { "No settings reported since the console started: the placeholders are the defaults. Get status asks the device." }
        }
    }
}
