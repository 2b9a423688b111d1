//! The results: every figure per subject and per round, medians over
//! rounds, added latency against direct from the same round, ratios to
//! direct and to the bare pass-through, the targets beside them; a
//! table on stdout and the same numbers as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::setup::Kind;
use crate::stats::median;

/// Everything measured: `subject -> metric -> one value per round`.
#[derive(Default)]
pub struct Results {
    pub subjects: Vec<(String, Kind)>,
    pub per_subject: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>,
    pub global: BTreeMap<&'static str, Vec<f64>>,
    /// Byte mismatches, lost recordings, failed requests: the run fails.
    pub failures: Vec<String>,
    /// Things worth knowing that do not fail the run (a peer's errors).
    pub notes: Vec<String>,
}

impl Results {
    pub fn push(&mut self, subject: &str, metric: &'static str, value: f64) {
        let row = self.per_subject.entry(subject.to_owned()).or_default();
        row.entry(metric).or_default().push(value);
    }

    pub fn push_global(&mut self, metric: &'static str, value: f64) {
        self.global.entry(metric).or_default().push(value);
    }

    pub fn fail(&mut self, what: String) {
        eprintln!("FAIL: {what}");
        self.failures.push(what);
    }

    /// The median over rounds of one subject's metric.
    pub fn get(&self, subject: &str, metric: &str) -> f64 {
        self.per_subject
            .get(subject)
            .and_then(|row| row.get(metric))
            .map_or(f64::NAN, |v| median(v.iter().copied()))
    }

    pub fn global(&self, metric: &str) -> f64 {
        self.global
            .get(metric)
            .map_or(f64::NAN, |v| median(v.iter().copied()))
    }

    /// The median over rounds of `subject`'s metric minus direct's in the same round.
    pub fn added(&self, subject: &str, metric: &str) -> f64 {
        let (Some(own), Some(base)) = (
            self.per_subject.get(subject).and_then(|r| r.get(metric)),
            self.per_subject.get("direct").and_then(|r| r.get(metric)),
        ) else {
            return f64::NAN;
        };
        median(own.iter().zip(base).map(|(a, b)| a - b))
    }

    /// `subject`'s added figure over `base`'s; NaN when `base` added nothing
    /// measurable (a ratio to noise around zero means nothing).
    fn added_ratio(&self, subject: &str, base: &str, metric: &str) -> f64 {
        let b = self.added(base, metric);
        if b > 0.0 {
            self.added(subject, metric) / b
        } else {
            f64::NAN
        }
    }

    fn name_of(&self, kind: Kind) -> Option<&str> {
        self.subjects
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(n, _)| n.as_str())
    }

    /// The whole report as text.
    pub fn table(&self, header: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}");
        let width = 30;
        let _ = write!(out, "{:<width$}", "");
        for (name, _) in &self.subjects {
            let _ = write!(out, "{name:>14}");
        }
        let _ = writeln!(out);
        for (label, cell, metric, format) in ROWS {
            let _ = write!(out, "{label:<width$}");
            for (name, _) in &self.subjects {
                let value = match cell {
                    Cell::Median => self.get(name, metric),
                    Cell::Added => self.added(name, metric),
                };
                let _ = write!(out, "{:>14}", fmt(value, format));
            }
            let _ = writeln!(out);
        }
        out.push_str(&self.ratios());
        out.push_str(&self.globals());
        out.push_str(&self.targets());
        out
    }

    /// Every tether figure as a ratio to direct and to the bare pass-through.
    fn ratios(&self) -> String {
        let mut out = String::from("\nratios (x direct / x bare)\n");
        let bare = self.name_of(Kind::Bare).unwrap_or("bare");
        for (name, kind) in &self.subjects {
            if matches!(kind, Kind::Direct) {
                continue;
            }
            let r = |m: &str, base: &str| self.get(name, m) / self.get(base, m);
            let a = |m: &str| self.added_ratio(name, bare, m);
            let _ = writeln!(
                out,
                "  {name:<14} req/s {:.2}x / {:.2}x   added p50 {}x bare   TTFT p99 added {}x bare   gap p99 added {}x bare   CPU/req {}x bare   chat req/s {}x bare",
                r("rps", "direct"),
                r("rps", bare),
                fmt(a("p50_us"), "{:.2}"),
                fmt(a("ttft_p99_us"), "{:.2}"),
                fmt(a("gap_p99_us"), "{:.2}"),
                fmt(r("cpu_us_per_req", bare), "{:.2}"),
                fmt(r("chat_rps", bare), "{:.2}"),
            );
        }
        out
    }

    fn globals(&self) -> String {
        let mut out = String::from("\ntether-redis and the rest\n");
        for (metric, label) in GLOBALS {
            let _ = writeln!(out, "  {label:<48} {}", fmt(self.global(metric), "{:.2}"));
        }
        out
    }

    /// The targets, each with its measurement and whether it holds.
    fn targets(&self) -> String {
        let mut out = String::from("\ntargets, tether on Redis (measured / goal)\n");
        let bare = self.name_of(Kind::Bare).unwrap_or("bare");
        let tr = "tether-redis";
        let checks: Vec<(&str, f64, f64, bool)> = vec![
            (
                "req/s at conc, x bare (>= 0.9)",
                self.get(tr, "rps") / self.get(bare, "rps"),
                0.9,
                true,
            ),
            (
                "added p50 one at a time µs (<= 100)",
                self.added(tr, "p50_1_us"),
                100.0,
                false,
            ),
            (
                "TTFT added p99, x bare (<= 1.2)",
                self.added_ratio(tr, bare, "ttft_p99_us"),
                1.2,
                false,
            ),
            (
                "gap added p99, x bare (<= 1.2)",
                self.added_ratio(tr, bare, "gap_p99_us"),
                1.2,
                false,
            ),
            (
                "CPU µs / request (<= 30)",
                self.get(tr, "cpu_us_per_req"),
                30.0,
                false,
            ),
            (
                "CPU / request, x tether-off (<= 1.3)",
                self.get(tr, "cpu_us_per_req") / self.get("tether-off", "cpu_us_per_req"),
                1.3,
                false,
            ),
            (
                "RSS KiB per active stream at scale (<= 50)",
                self.global("scale_rss_kib_per_stream"),
                50.0,
                false,
            ),
            (
                "the same, HTTP/2 clients (<= 50)",
                self.global("scale_h2c_rss_kib_per_stream"),
                50.0,
                false,
            ),
            (
                "Redis commands per 100 tokens (<= 1)",
                self.global("redis_cmds_per_1k_tokens") / 10.0,
                1.0,
                false,
            ),
            (
                "resume first byte, same replica ms (<= 1)",
                self.global("resume_same_p50_ms"),
                1.0,
                false,
            ),
            (
                "resume first byte, other replica ms (<= 5)",
                self.global("resume_cross_p50_ms"),
                5.0,
                false,
            ),
            (
                "history messages/s (>= 100,000)",
                self.global("history_msgs_per_s"),
                100_000.0,
                true,
            ),
        ];
        for (label, value, goal, at_least) in checks {
            let verdict = if value.is_nan() {
                "n/a"
            } else if (at_least && value >= goal) || (!at_least && value <= goal) {
                "meets"
            } else {
                "misses"
            };
            let _ = writeln!(out, "  {label:<48} {:>12}   {verdict}", fmt(value, "{:.2}"));
        }
        out
    }

    /// Every value, per round and as the median, as JSON.
    pub fn json(&self) -> serde_json::Value {
        let rounds = |m: &BTreeMap<&'static str, Vec<f64>>| -> serde_json::Value {
            m.iter()
                .map(|(k, v)| {
                    let v: Vec<serde_json::Value> = v.iter().map(|x| num(*x)).collect();
                    ((*k).to_owned(), serde_json::json!({"median": num(median(v.iter().filter_map(|x| x.as_f64()))), "rounds": v}))
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let subjects: serde_json::Map<_, _> = self
            .per_subject
            .iter()
            .map(|(name, row)| (name.clone(), rounds(row)))
            .collect();
        serde_json::json!({
            "subjects": subjects,
            "global": rounds(&self.global),
            "failures": self.failures,
            "notes": self.notes,
        })
    }
}

/// How a table cell is read from a metric.
#[derive(Clone, Copy)]
enum Cell {
    /// The median over rounds.
    Median,
    /// The median over rounds of the difference to direct.
    Added,
}

/// The per-subject table: label, cell, metric, format.
const ROWS: [(&str, Cell, &str, &str); 28] = [
    ("non-stream req/s (conc)", Cell::Median, "rps", "{:.0}"),
    ("  p50 latency µs", Cell::Median, "p50_us", "{:.0}"),
    ("  p99 latency µs", Cell::Median, "p99_us", "{:.0}"),
    ("  added p50 µs", Cell::Added, "p50_us", "{:+.0}"),
    ("  added p99 µs", Cell::Added, "p99_us", "{:+.0}"),
    (
        "one at a time: added p50 µs",
        Cell::Added,
        "p50_1_us",
        "{:+.0}",
    ),
    ("  added p99 µs", Cell::Added, "p99_1_us", "{:+.0}"),
    ("CPU µs / request", Cell::Median, "cpu_us_per_req", "{:.1}"),
    (
        "  of which in the kernel µs",
        Cell::Median,
        "sys_us_per_req",
        "{:.1}",
    ),
    (
        "  context switches / request",
        Cell::Median,
        "switches_per_req",
        "{:.2}",
    ),
    (
        "  redis-server CPU µs / req",
        Cell::Median,
        "store_cpu_us_per_req",
        "{:.1}",
    ),
    (
        "RSS MiB (after non-stream)",
        Cell::Median,
        "rss_mib",
        "{:.1}",
    ),
    (
        "chat, 21st turn: req/s (conc)",
        Cell::Median,
        "chat_rps",
        "{:.0}",
    ),
    ("  added p50 µs", Cell::Added, "chat_p50_us", "{:+.0}"),
    (
        "  one at a time: added p50 µs",
        Cell::Added,
        "chat_p50_1_us",
        "{:+.0}",
    ),
    (
        "  CPU µs / request",
        Cell::Median,
        "chat_cpu_us_per_req",
        "{:.1}",
    ),
    (
        "    of which in the kernel µs",
        Cell::Median,
        "chat_sys_us_per_req",
        "{:.1}",
    ),
    (
        "  redis-server CPU µs / req",
        Cell::Median,
        "chat_store_cpu_us_per_req",
        "{:.1}",
    ),
    ("streams/s", Cell::Median, "streams_per_s", "{:.0}"),
    ("  TTFT added p50 µs", Cell::Added, "ttft_p50_us", "{:+.0}"),
    ("  TTFT added p99 µs", Cell::Added, "ttft_p99_us", "{:+.0}"),
    ("  gap added p50 µs", Cell::Added, "gap_p50_us", "{:+.0}"),
    ("  gap added p99 µs", Cell::Added, "gap_p99_us", "{:+.0}"),
    (
        "  CPU µs / chunk",
        Cell::Median,
        "cpu_us_per_chunk",
        "{:.1}",
    ),
    (
        "    of which in the kernel µs",
        Cell::Median,
        "sys_us_per_chunk",
        "{:.1}",
    ),
    (
        "  context switches / chunk",
        Cell::Median,
        "switches_per_chunk",
        "{:.2}",
    ),
    (
        "  byte-exact streams",
        Cell::Median,
        "exact_streams",
        "{:.0}",
    ),
    ("  byte mismatches", Cell::Median, "mismatches", "{:.0}"),
];

/// The global figures, in print order.
pub const GLOBALS: [(&str, &str); 38] = [
    (
        "redis_cmds_per_stream",
        "Redis commands per short stream (stream run)",
    ),
    (
        "redis_cmds_per_long_stream",
        "Redis commands per long stream (cost run)",
    ),
    (
        "redis_cmds_per_1k_tokens",
        "Redis commands per 1,000 tokens (cost run)",
    ),
    (
        "redis_cmds_per_long_stream_later_turn",
        "  the same, a chat's later turn: per long stream",
    ),
    (
        "redis_cmds_per_1k_tokens_later_turn",
        "  the same, a chat's later turn: per 1,000 tokens",
    ),
    (
        "resume_same_p50_ms",
        "resume first byte, same replica p50 ms",
    ),
    (
        "resume_same_p99_ms",
        "resume first byte, same replica p99 ms",
    ),
    (
        "resume_cross_p50_ms",
        "resume first byte, other replica p50 ms",
    ),
    (
        "resume_cross_p99_ms",
        "resume first byte, other replica p99 ms",
    ),
    (
        "resume_done_same_p50_ms",
        "resume of a finished stream, same p50 ms",
    ),
    (
        "resume_done_cross_p50_ms",
        "resume of a finished stream, other p50 ms",
    ),
    (
        "follow_same_wait_max_ms",
        "following live, same replica: longest wait ms",
    ),
    (
        "follow_cross_wait_max_ms",
        "following live, other replica: longest wait ms",
    ),
    ("history_msgs_per_s", "history messages/s written (Redis)"),
    (
        "history_bytes_per_msg",
        "bytes per stored message (MEMORY USAGE)",
    ),
    ("scale_streams", "scale: concurrent streams"),
    (
        "scale_rss_kib_per_stream",
        "scale: tether RSS KiB per active stream",
    ),
    (
        "scale_gap_p99_added_ms",
        "scale: p99 gap added ms (vs nominal)",
    ),
    ("scale_ttft_p50_ms", "scale: TTFT p50 ms"),
    ("scale_ttft_p99_ms", "scale: TTFT p99 ms"),
    ("scale_cpu_us_per_chunk", "scale: tether CPU µs per chunk"),
    ("scale_recorded", "scale: streams recorded and byte-exact"),
    (
        "scale_direct_gap_p99_added_ms",
        "scale, direct: p99 gap added ms",
    ),
    ("scale_direct_ttft_p50_ms", "scale, direct: TTFT p50 ms"),
    ("scale_direct_ttft_p99_ms", "scale, direct: TTFT p99 ms"),
    ("scale_bare_streams", "scale, bare: concurrent streams"),
    (
        "scale_bare_rss_kib_per_stream",
        "scale, bare: RSS KiB per stream",
    ),
    (
        "scale_bare_gap_p99_added_ms",
        "scale, bare: p99 gap added ms",
    ),
    ("scale_bare_ttft_p50_ms", "scale, bare: TTFT p50 ms"),
    ("scale_bare_ttft_p99_ms", "scale, bare: TTFT p99 ms"),
    (
        "scale_bare_cpu_us_per_chunk",
        "scale, bare: CPU µs per chunk",
    ),
    (
        "scale_h2c_streams",
        "scale, HTTP/2 clients: concurrent streams",
    ),
    (
        "scale_h2c_rss_kib_per_stream",
        "scale, HTTP/2 clients: RSS KiB per stream",
    ),
    (
        "scale_h2c_gap_p99_added_ms",
        "scale, HTTP/2 clients: p99 gap added ms",
    ),
    (
        "scale_h2c_ttft_p50_ms",
        "scale, HTTP/2 clients: TTFT p50 ms",
    ),
    (
        "scale_h2c_ttft_p99_ms",
        "scale, HTTP/2 clients: TTFT p99 ms",
    ),
    (
        "scale_h2c_cpu_us_per_chunk",
        "scale, HTTP/2 clients: CPU µs per chunk",
    ),
    (
        "scale_h2c_recorded",
        "scale, HTTP/2 clients: recorded, byte-exact",
    ),
];

fn num(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn fmt(value: f64, format: &str) -> String {
    if value.is_nan() || value.is_infinite() {
        return "-".into();
    }
    match format {
        "{:.0}" => format!("{value:.0}"),
        "{:+.0}" => format!("{value:+.0}"),
        "{:.1}" => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}
