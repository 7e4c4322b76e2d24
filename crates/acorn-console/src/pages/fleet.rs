//! The Fleet page: every registered device with its live state, search and sorting, counts,
//! and presses per minute.

use acorn_backend::registry::{DeviceRecord, RegistrationStatus};
use maud::{html, Markup};

use super::{page, time_ms, Nav};
use crate::auth::Session;
use crate::fleet::DeviceLive;

/// One row of the table.
pub struct Row {
    /// The registry's record.
    pub record: DeviceRecord,
    /// What the broker said.
    pub live: DeviceLive,
    /// Whole days the registered certificate has left.
    pub days_left: Option<i64>,
}

impl Row {
    /// `revoked`, or the live state (`online`, `offline`, `error`, `unknown`).
    pub fn state(&self) -> &'static str {
        match self.record.status {
            RegistrationStatus::Revoked => "revoked",
            RegistrationStatus::Active => self.live.state(),
        }
    }

    /// The firmware the device last reported, else the one it registered with.
    pub fn firmware(&self) -> &str {
        self.live
            .last_status
            .as_ref()
            .map_or(&self.record.firmware_version, |s| &s.firmware_version)
    }

    fn rotation(&self) -> String {
        self.live
            .rotation
            .map(super::rotation_name)
            .unwrap_or_else(|| "—".into())
    }
}

/// Columns the table sorts by (`?sort=`).
pub const SORTS: [(&str, &str); 5] = [
    ("id", "Device"),
    ("state", "State"),
    ("seen", "Last seen"),
    ("press", "Last press"),
    ("days", "Certificate"),
];

/// Keeps the rows whose id, state or firmware contains `q` (any case), sorted by `sort`.
pub fn select(mut rows: Vec<Row>, q: &str, sort: &str) -> Vec<Row> {
    let q = q.trim().to_lowercase();
    if !q.is_empty() {
        rows.retain(|r| {
            r.record.device_id.to_lowercase().contains(&q)
                || r.state().contains(&q)
                || r.firmware().to_lowercase().contains(&q)
        });
    }
    match sort {
        "state" => rows.sort_by(|a, b| a.state().cmp(b.state())),
        "seen" => rows.sort_by_key(|r| std::cmp::Reverse(r.live.last_seen_ms)),
        "press" => rows.sort_by(|a, b| {
            let ts = |r: &Row| r.live.last_press.as_ref().map(|p| p.timestamp.clone());
            ts(b).cmp(&ts(a))
        }),
        "days" => rows.sort_by_key(|r| r.days_left),
        _ => rows.sort_by(|a, b| a.record.device_id.cmp(&b.record.device_id)),
    }
    rows
}

/// `sort=KEY&q=Q`, encoded.
fn query(sort: &str, q: &str) -> String {
    serde_urlencoded::to_string([("sort", sort), ("q", q)]).unwrap_or_default()
}

/// What the page shows besides the rows.
pub struct Summary<'a> {
    /// Registered devices (before the search).
    pub total: usize,
    /// Of which online.
    pub online: usize,
    /// Of which revoked.
    pub revoked: usize,
    /// Presses per minute, oldest first.
    pub chart: &'a [u32],
    /// Whether the broker link is up.
    pub linked: bool,
}

/// The page.
pub fn render(
    session: &Session,
    rows: &[Row],
    summary: &Summary<'_>,
    q: &str,
    sort: &str,
) -> Markup {
    let main = html! {
        h1 { "Fleet" }
        section.counts {
            div { span #count-total { (summary.total) } " registered" }
            div { span #count-online { (summary.online) } " online" }
            div { span #count-offline { (summary.total - summary.online - summary.revoked) } " not online" }
            div { span #count-revoked { (summary.revoked) } " revoked" }
            @if !summary.linked {
                div.warn { "no broker link: live state unavailable" }
            }
        }
        (chart(summary.chart))
        form.search method="get" action="/" {
            input #q type="search" name="q" value=(q) placeholder="Search id, state, firmware" aria-label="Search";
            input type="hidden" name="sort" value=(sort);
            button #search type="submit" { "Search" }
        }
        table #fleet {
            thead { tr {
                @for (key, label) in SORTS {
                    th { a href={ "/?" (query(key, q)) } aria-sort=[(sort == key).then_some("ascending")] { (label) } }
                }
                th { "Firmware" } th { "Rotation" }
            } }
            tbody {
                @for row in rows {
                    tr data-device=(row.record.device_id) {
                        td { a href={ "/devices/" (row.record.device_id) } { (row.record.device_id) } }
                        td data-field="state" { span.state data-state=(row.state()) { (row.state()) } }
                        td data-field="lastSeen" { (row.live.last_seen_ms.map(time_ms).unwrap_or_else(|| "—".into())) }
                        td data-field="lastPress" {
                            @if let Some(p) = &row.live.last_press {
                                (p.timestamp) " · " (p.button_rf_id)
                            } @else { "—" }
                        }
                        td data-field="daysLeft" { (row.days_left.map(|d| format!("{d} days")).unwrap_or_else(|| "?".into())) }
                        td data-field="firmware" { (row.firmware()) }
                        td data-field="rotation" { (row.rotation()) }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="7" { "No device matches." } }
                }
            }
        }
    };
    page("Fleet", Nav::Fleet, Some(session), Some("fleet"), main)
}

/// Presses per minute as SVG bars (drawn by the server: no script, no inline style).
fn chart(counts: &[u32]) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (10u32, 60u32);
    let width = w * u32::try_from(counts.len()).unwrap_or(0);
    html! {
        figure.chart {
            svg #chart width=(width) height=(h) viewBox={ "0 0 " (width) " " (h) } role="img" aria-label="Presses per minute" {
                @for (i, n) in counts.iter().enumerate() {
                    @let bar = (n * (h - 2)).div_ceil(max);
                    rect.bar x=(u32::try_from(i).unwrap_or(0) * w + 1) y=(h - bar) width=(w - 2) height=(bar) data-count=(n) {
                        title { (n) " presses" }
                    }
                }
            }
            figcaption { "Presses per minute, last " (counts.len()) " minutes (peak " span #chart-peak { (max) } ")" }
        }
    }
}
