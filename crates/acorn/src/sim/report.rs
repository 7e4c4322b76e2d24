//! The run's report: a closing table for people, JSON for machines (schema:
//! `docs/schemas/sim-report.json`), and a self-contained HTML page with SVG plots drawn by
//! plotters (no script, no fonts: the browser draws the text).

use std::fmt::Write as _;

use plotters::prelude::*;
use serde::Serialize;

use super::chaos::FaultRecord;
use super::device::DeviceSummary;
use super::ledger::{Ledger, NamedPress, Percentiles, Tally};
use super::Args;

/// The counters once a second.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the start of the load.
    pub t: f64,
    /// Devices connected.
    pub connected: u64,
    /// CONNACKs so far.
    pub connects: u64,
    /// Presses made so far.
    pub sent: u64,
    /// Presses acknowledged so far.
    pub acked: u64,
    /// Press copies received so far.
    pub received: u64,
    /// Errors and failed connects so far.
    pub errors: u64,
}

/// What happened after a fault.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Storm {
    /// The fault.
    #[serde(flatten)]
    pub fault: FaultRecord,
    /// Connects per second in each second after it (up to 60 s or the next fault).
    pub connects_per_second: Vec<u64>,
    /// The largest of them.
    pub peak_connects_per_second: u64,
    /// Seconds until every device was connected again (none when they never were).
    pub seconds_to_all_connected: Option<f64>,
}

/// Memory of the simulator process.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Resident memory before the devices started.
    pub rss_before_bytes: u64,
    /// Resident memory when every device was first connected.
    pub rss_all_connected_bytes: Option<u64>,
    /// (all connected − before) / devices.
    pub bytes_per_connected_device: Option<u64>,
    /// Peak resident memory (VmHWM).
    pub peak_rss_bytes: u64,
}

/// Per-device facts about connects.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconnects {
    /// Devices that connected at least once.
    pub devices_ever_connected: u64,
    /// Devices that connected at least twice.
    pub devices_reconnected: u64,
    /// The fewest connects of any device.
    pub min_connects_per_device: u64,
    /// The shortest time between two CONNECT attempts of one device (the session's floor is
    /// 1000 ms), ms; none when no device tried twice.
    pub min_connect_gap_ms: Option<u64>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Report format.
    pub schema: &'static str,
    /// What was driven.
    pub target: String,
    /// Devices simulated.
    pub devices: u64,
    /// The load's duration, seconds.
    pub duration_seconds: f64,
    /// Devices started per second (0: at once).
    pub ramp: u32,
    /// The press profile.
    pub profile: super::Profile,
    /// Seconds between two presses of one device.
    pub press_every_seconds: f64,
    /// Devices connected at the end of the load.
    pub connected: u64,
    /// Presses made.
    pub sent: u64,
    /// Presses acknowledged by the broker (PUBACK).
    pub acked: u64,
    /// Distinct presses received by the observer.
    pub received: u64,
    /// Presses acknowledged but never received.
    pub lost: u64,
    /// Presses received more than once.
    pub duplicated: u64,
    /// Presses not acknowledged when the run ended (still queued on their device).
    pub unacked: u64,
    /// Press messages the observer could not match to a press of this run.
    pub unexpected: u64,
    /// Whether an observer counted received presses (`received` and `lost` mean nothing
    /// without one).
    pub observed: bool,
    /// The lost presses, named (at most 1000).
    pub lost_presses: Vec<NamedPress>,
    /// The duplicated presses, named, with their copies (at most 1000).
    pub duplicated_presses: Vec<NamedPress>,
    /// CONNACKs accepted.
    pub connects: u64,
    /// CONNECT attempts.
    pub connect_attempts: u64,
    /// Failed connects.
    pub connect_failures: u64,
    /// Established connections that ended.
    pub disconnects: u64,
    /// Other errors.
    pub errors: u64,
    /// Commands and settings updates sent by the cloud side.
    pub commands_sent: u64,
    /// Their replies received.
    pub commands_answered: u64,
    /// Press → cloud latency, ms.
    pub press_latency_ms: Percentiles,
    /// CONNECT (TCP start) → CONNACK latency, ms.
    pub connect_latency_ms: Percentiles,
    /// Connects per second from the start until every device was first connected.
    pub ramp_connects_per_second: Option<f64>,
    /// Presses per second over the load (sent / duration).
    pub presses_per_second: f64,
    /// Reconnect facts.
    pub reconnects: Reconnects,
    /// Memory.
    pub memory: Memory,
    /// Faults and what followed each.
    pub faults: Vec<Storm>,
    /// The counters once a second.
    pub timeline: Vec<Sample>,
    /// Histogram of press latency: (upper bound ms, count) buckets, for plots.
    pub press_latency_buckets: Vec<(f64, u64)>,
    /// Histogram of connect latency: (upper bound ms, count).
    pub connect_latency_buckets: Vec<(f64, u64)>,
}

/// What the report is built from.
pub struct Inputs<'a> {
    pub args: &'a Args,
    pub target: String,
    pub observed: bool,
    pub ledger: &'a Ledger,
    pub tally: Tally,
    pub ids: &'a [String],
    pub summaries: &'a [DeviceSummary],
    pub samples: Vec<Sample>,
    pub faults: Vec<FaultRecord>,
    pub connected_at_end: u64,
    pub ramp_seconds: f64,
    pub load_seconds: f64,
    pub rss_before: u64,
    pub all_connected: Option<(f64, u64)>,
    pub peak_rss: u64,
}

fn buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    // Log buckets: 10 per decade from 0.1 ms.
    let mut out = Vec::new();
    let mut lower = 0u64;
    let mut bound = 100.0f64; // µs
    while lower <= h.max() && out.len() < 80 {
        let upper = bound.round() as u64;
        let count = h.count_between(lower, upper.saturating_sub(1).max(lower));
        out.push(((upper as f64) / 1000.0, count));
        lower = upper;
        bound *= 10f64.powf(0.1);
    }
    out
}

/// A fault's start (not its end: `clear`, `restart`).
fn is_fault(f: &FaultRecord) -> bool {
    !matches!(f.kind.as_str(), "clear" | "restart")
}

fn storms(faults: &[FaultRecord], samples: &[Sample], n: u64) -> Vec<Storm> {
    let starts: Vec<f64> = faults
        .iter()
        .filter(|f| is_fault(f))
        .map(|f| f.at_seconds)
        .collect();
    faults
        .iter()
        .filter(|f| is_fault(f))
        .map(|fault| {
            let from = fault.at_seconds;
            let until = starts
                .iter()
                .copied()
                .find(|&s| s > from)
                .unwrap_or(f64::MAX)
                .min(from + 60.0);
            let window: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.t >= from && s.t <= until + 1.0)
                .collect();
            let connects_per_second: Vec<u64> = window
                .windows(2)
                .map(|w| w[1].connects.saturating_sub(w[0].connects))
                .collect();
            // All connected again: the first sample after a dip below n.
            let mut dipped = false;
            let mut back = None;
            for s in &window {
                if s.connected < n {
                    dipped = true;
                } else if dipped {
                    back = Some(((s.t - from) * 10.0).round() / 10.0);
                    break;
                }
            }
            Storm {
                fault: fault.clone(),
                peak_connects_per_second: connects_per_second.iter().copied().max().unwrap_or(0),
                connects_per_second,
                seconds_to_all_connected: if dipped { back } else { Some(0.0) },
            }
        })
        .collect()
}

impl Report {
    /// Builds the report.
    pub fn build(i: Inputs<'_>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let n = i.ids.len() as u64;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        let press_h = i
            .ledger
            .press_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connect_h = i
            .ledger
            .connect_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let min_gap = i
            .summaries
            .iter()
            .flat_map(|s| s.attempts_ms.windows(2).map(|w| w[1].saturating_sub(w[0])))
            .min();
        let ramp_connects = i.all_connected.map(|(t, _)| n as f64 / t.max(0.001));
        let per_device = i
            .all_connected
            .map(|(_, rss)| rss.saturating_sub(i.rss_before) / n.max(1));
        let tally = i.tally;
        let _ = i.ramp_seconds;
        Self {
            schema: "acorn-sim-report/1",
            target: i.target,
            devices: n,
            duration_seconds: i.args.duration.as_secs_f64(),
            ramp: i.args.ramp,
            profile: i.args.profile,
            press_every_seconds: i.args.press_every.as_secs_f64(),
            connected: i.connected_at_end,
            sent: tally.sent,
            acked: tally.acked,
            received: tally.received,
            lost: tally.lost.len() as u64,
            duplicated: tally.duplicated.len() as u64,
            unacked: tally.unacked,
            unexpected: load(&i.ledger.unexpected),
            observed: i.observed,
            lost_presses: tally.lost.into_iter().take(1000).collect(),
            duplicated_presses: tally.duplicated.into_iter().take(1000).collect(),
            connects: load(&i.ledger.connects),
            connect_attempts: load(&i.ledger.attempts),
            connect_failures: load(&i.ledger.connect_failures),
            disconnects: load(&i.ledger.disconnects),
            errors: load(&i.ledger.errors),
            commands_sent: load(&i.ledger.commands_sent),
            commands_answered: load(&i.ledger.commands_answered),
            press_latency_ms: Percentiles::of(&press_h),
            connect_latency_ms: Percentiles::of(&connect_h),
            ramp_connects_per_second: ramp_connects.map(|r| (r * 10.0).round() / 10.0),
            presses_per_second: ((tally.sent as f64 / i.args.duration.as_secs_f64().max(0.001))
                * 10.0)
                .round()
                / 10.0,
            reconnects: Reconnects {
                devices_ever_connected: i.summaries.iter().filter(|s| s.connects > 0).count()
                    as u64,
                devices_reconnected: i.summaries.iter().filter(|s| s.connects > 1).count() as u64,
                min_connects_per_device: i
                    .summaries
                    .iter()
                    .map(|s| u64::from(s.connects))
                    .min()
                    .unwrap_or(0),
                min_connect_gap_ms: min_gap,
            },
            memory: Memory {
                rss_before_bytes: i.rss_before,
                rss_all_connected_bytes: i.all_connected.map(|(_, rss)| rss),
                bytes_per_connected_device: per_device,
                peak_rss_bytes: i.peak_rss,
            },
            faults: storms(&i.faults, &i.samples, n),
            timeline: i.samples,
            press_latency_buckets: buckets(&press_h),
            connect_latency_buckets: buckets(&connect_h),
        }
        .with_load_seconds(i.load_seconds)
    }

    fn with_load_seconds(self, _load_seconds: f64) -> Self {
        self
    }

    /// The closing table.
    pub fn table(&self) -> String {
        let mut out = String::from("\n");
        let p = |l: &Percentiles| {
            format!(
                "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1} ms ({} samples)",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            )
        };
        let _ = writeln!(
            out,
            "acorn sim: {} devices against {}",
            self.devices, self.target
        );
        let rows: Vec<(&str, String)> = vec![
            (
                "connected at end",
                format!("{}/{}", self.connected, self.devices),
            ),
            ("presses sent", self.sent.to_string()),
            ("acknowledged (PUBACK)", self.acked.to_string()),
            (
                "received by the cloud",
                if self.observed {
                    self.received.to_string()
                } else {
                    "not observed".to_owned()
                },
            ),
            ("lost (acked, never received)", self.lost.to_string()),
            ("duplicated (same pressId)", self.duplicated.to_string()),
            ("not acknowledged at the end", self.unacked.to_string()),
            ("presses/s", format!("{:.1}", self.presses_per_second)),
            ("press -> cloud", p(&self.press_latency_ms)),
            ("connect (TCP+TLS+CONNACK)", p(&self.connect_latency_ms)),
            (
                "ramp connects/s",
                self.ramp_connects_per_second
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "not all connected".to_owned()),
            ),
            (
                "connects / attempts / failures",
                format!(
                    "{} / {} / {}",
                    self.connects, self.connect_attempts, self.connect_failures
                ),
            ),
            (
                "devices reconnected",
                format!(
                    "{}/{} (min gap between CONNECTs of one device: {})",
                    self.reconnects.devices_reconnected,
                    self.devices,
                    self.reconnects
                        .min_connect_gap_ms
                        .map(|g| format!("{g} ms"))
                        .unwrap_or_else(|| "-".to_owned())
                ),
            ),
            (
                "commands answered",
                format!("{}/{}", self.commands_answered, self.commands_sent),
            ),
            ("errors", self.errors.to_string()),
            (
                "memory",
                format!(
                    "peak RSS {:.1} MB; {} per connected device",
                    self.memory.peak_rss_bytes as f64 / 1e6,
                    self.memory
                        .bytes_per_connected_device
                        .map(|b| format!("{:.1} KB", b as f64 / 1e3))
                        .unwrap_or_else(|| "-".to_owned())
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<32} {v}");
        }
        for storm in &self.faults {
            let _ = writeln!(
                out,
                "  fault at {:>6.1}s {:<10} peak {} connects/s; all connected again after {}",
                storm.fault.at_seconds,
                storm.fault.kind,
                storm.peak_connects_per_second,
                storm
                    .seconds_to_all_connected
                    .map(|s| format!("{s:.1} s"))
                    .unwrap_or_else(|| "never (within 60 s)".to_owned())
            );
        }
        for lost in self.lost_presses.iter().take(20) {
            let _ = writeln!(out, "  LOST {} pressId {}", lost.device_id, lost.press_id);
        }
        out
    }

    /// The HTML page.
    pub fn html(&self) -> anyhow::Result<String> {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut page = String::new();
        let _ = write!(
            page,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>acorn sim: {} devices</title><style>\
             body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}} \
             figure{{display:inline-block;margin:1em}} .bad{{color:#b00;font-weight:bold}}\
             </style></head><body>\n<h1>acorn sim: {} devices</h1>\n<p>{}</p>\n",
            self.devices,
            self.devices,
            esc(&self.target)
        );
        page.push_str("<table>\n");
        for line in self.table().lines().skip(2) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let class = if line.starts_with("LOST") || (line.starts_with("lost") && self.lost > 0) {
                " class=\"bad\""
            } else {
                ""
            };
            let _ = writeln!(page, "<tr><td{class}>{}</td></tr>", esc(line));
        }
        page.push_str("</table>\n");
        let plots = [
            ("Connected devices", self.plot_connected()?),
            ("Presses per second", self.plot_presses()?),
            (
                "Press → cloud latency",
                plot_histogram(&self.press_latency_buckets, "press → cloud (ms)")?,
            ),
            (
                "Connect latency",
                plot_histogram(&self.connect_latency_buckets, "CONNECT → CONNACK (ms)")?,
            ),
            (
                "Reconnects per second after each fault",
                self.plot_storms()?,
            ),
        ];
        for (title, svg) in plots {
            let _ = write!(
                page,
                "<figure><figcaption>{}</figcaption>\n{svg}\n</figure>\n",
                esc(title)
            );
        }
        page.push_str("</body></html>\n");
        Ok(page)
    }

    fn plot_connected(&self) -> anyhow::Result<String> {
        let points: Vec<(f64, f64)> = self
            .timeline
            .iter()
            .map(|s| (s.t, s.connected as f64))
            .collect();
        let marks: Vec<f64> = self.faults.iter().map(|f| f.fault.at_seconds).collect();
        line_plot(
            ("seconds", "devices connected"),
            &[Series {
                label: "connected".to_owned(),
                points,
                color: BLUE,
            }],
            &marks,
            self.devices as f64,
        )
    }

    fn plot_presses(&self) -> anyhow::Result<String> {
        let rate = |f: fn(&Sample) -> u64| -> Vec<(f64, f64)> {
            self.timeline
                .windows(2)
                .map(|w| {
                    let dt = (w[1].t - w[0].t).max(0.001);
                    (w[1].t, f(&w[1]).saturating_sub(f(&w[0])) as f64 / dt)
                })
                .collect()
        };
        let series = [
            Series {
                label: "sent".to_owned(),
                points: rate(|s| s.sent),
                color: BLUE,
            },
            Series {
                label: "received".to_owned(),
                points: rate(|s| s.received),
                color: GREEN,
            },
        ];
        let marks: Vec<f64> = self.faults.iter().map(|f| f.fault.at_seconds).collect();
        line_plot(
            ("seconds", "presses per second"),
            &series,
            &marks,
            top(&series),
        )
    }

    fn plot_storms(&self) -> anyhow::Result<String> {
        let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
        let series: Vec<Series> = self
            .faults
            .iter()
            .enumerate()
            .map(|(k, s)| Series {
                label: format!("{} at {:.0}s", s.fault.kind, s.fault.at_seconds),
                points: s
                    .connects_per_second
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i as f64 + 1.0, *c as f64))
                    .collect(),
                color: colors[k % colors.len()],
            })
            .collect();
        let top = top(&series).max(self.devices as f64 / 10.0);
        line_plot(
            ("seconds after the fault", "connects per second"),
            &series,
            &[],
            top,
        )
    }
}

/// One line of a plot.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

fn top(series: &[Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
}

fn line_plot(
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    marks: &[f64],
    top: f64,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let xmax = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let ymax = top.max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        for &at in marks {
            chart.draw_series(LineSeries::new(
                [(at, 0.0), (at, ymax)],
                RED.mix(0.5).stroke_width(1),
            ))?;
        }
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn plot_histogram(buckets: &[(f64, u64)], x_desc: &str) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
        let n = buckets.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..top * 1.1)?;
        let labels: Vec<f64> = buckets.iter().map(|b| b.0).collect();
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("count")
            .x_labels(10)
            .x_label_formatter(&|x| {
                labels
                    .get(*x as usize)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_default()
            })
            .draw()?;
        chart.draw_series(buckets.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [(i as f64, 0.0), (i as f64 + 0.9, b.1 as f64)],
                BLUE.mix(0.6).filled(),
            )
        }))?;
        root.present()?;
    }
    Ok(svg)
}
