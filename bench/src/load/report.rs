//! Results: a human summary on the terminal, a JSON document with the command line, the
//! node's version and the machine, and SVG pictures of latency and throughput.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;

/// What to tell the person running the bench when the node refused sends as `rate_limited`:
/// its default send limits stop a load generator as they stop a flood.
pub fn rate_limit_hint(rate_limited: u64) -> Option<String> {
    (rate_limited > 0).then(|| {
        format!(
            "{rate_limited} sends were refused rate_limited: the node's send limits are on; start it with \
             TROUPE_ACTORS__RATE_LIMITS__CONNECTION_SENDS__PER_SECOND and ..._BURST (and USER_SENDS) raised, \
             as bench/run-all.sh does"
        )
    })
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records a value, clamping it into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, micros: u64) {
    let _ = hist.record(micros.clamp(1, hist.high()));
}

/// Percentiles of a latency histogram, in milliseconds.
pub fn latency_summary(hist: &Histogram<u64>) -> Value {
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    if hist.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": hist.len(),
        "p50_ms": ms(hist.value_at_quantile(0.50)),
        "p90_ms": ms(hist.value_at_quantile(0.90)),
        "p99_ms": ms(hist.value_at_quantile(0.99)),
        "p99_9_ms": ms(hist.value_at_quantile(0.999)),
        "max_ms": ms(hist.max()),
        "mean_ms": (hist.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

/// The machine the bench ran on.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let memory_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()));
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": memory_kib.map(|k| (k as f64 / 1048576.0 * 10.0).round() / 10.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "hostname": read("/proc/sys/kernel/hostname").trim(),
    })
}

/// A finished run.
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Its parameters.
    pub parameters: Value,
    /// What it measured.
    pub results: Value,
    /// The node's `stats` at the end.
    pub node: Option<Value>,
    /// Lines for the terminal.
    pub summary: Vec<String>,
    /// Pictures to write next to the JSON: (file suffix, SVG text).
    pub pictures: Vec<(&'static str, String)>,
}

impl Report {
    /// Prints the summary and writes `<out>.json` and the pictures (`<out>-<suffix>.svg`).
    pub fn finish(self, out: Option<&Path>) -> std::io::Result<()> {
        println!("== {} ==", self.scenario);
        for line in &self.summary {
            println!("{line}");
        }
        let document = json!({
            "scenario": self.scenario,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "bench_version": env!("CARGO_PKG_VERSION"),
            "node": self.node.as_ref().map(|n| json!({ "version": n["version"], "pid": n["process"]["pid"] })),
            "machine": machine(),
            "finished_at_unix": super::wire::now_micros() / 1_000_000,
            "parameters": self.parameters,
            "results": self.results,
            "summary": self.summary,
        });
        let text = serde_json::to_string_pretty(&document).unwrap_or_default();
        match out {
            Some(prefix) => {
                if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let json_path = prefix.with_extension("json");
                std::fs::write(&json_path, &text)?;
                println!("wrote {}", json_path.display());
                for (suffix, svg) in &self.pictures {
                    let name =
                        format!("{}-{suffix}.svg", prefix.file_name().and_then(|n| n.to_str()).unwrap_or("bench"));
                    let path = prefix.with_file_name(name);
                    std::fs::write(&path, svg)?;
                    println!("wrote {}", path.display());
                }
            }
            None => println!("{text}"),
        }
        Ok(())
    }
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 45.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn svg_frame(
    title: &str,
    x_label: &str,
    y_label: &str,
    body: &str,
    x_ticks: &[(f64, String)],
    y_ticks: &[(f64, String)],
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"#,
        W / 2.0,
        escape(title),
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        escape(x_label),
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        escape(y_label),
    );
    for (x, label) in x_ticks {
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{TOP}" stroke="gainsboro"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            escape(label)
        );
    }
    for (y, label) in y_ticks {
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="gainsboro"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(label)
        );
    }
    s.push_str(body);
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn nice_max(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// The classic HDR picture: latency by percentile, the x axis stretched toward the tail.
pub fn latency_svg(hist: &Histogram<u64>, title: &str) -> String {
    // x = log10(1 / (1 - q)): 0 at p0, 1 at p90, 2 at p99, 3 at p99.9, 4 at p99.99.
    let x_max = 5.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y_max = nice_max(hist.max() as f64 / 1000.0);
    let mut points = String::new();
    let steps = 400;
    for i in 0..=steps {
        let x = x_max * i as f64 / steps as f64;
        let q = (1.0 - 10f64.powf(-x)).min(1.0);
        let ms = hist.value_at_quantile(q) as f64 / 1000.0;
        let _ = write!(points, "{:.1},{:.1} ", LEFT + plot_w * x / x_max, TOP + plot_h * (1.0 - ms / y_max));
    }
    let body = format!(r#"<polyline fill="none" stroke="steelblue" stroke-width="2" points="{points}"/>"#);
    let x_ticks: Vec<(f64, String)> = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
        .map(|(i, l)| (LEFT + plot_w * i as f64 / x_max, l.to_string()))
        .collect();
    let y_ticks: Vec<(f64, String)> =
        (0..=4).map(|i| (TOP + plot_h * (1.0 - i as f64 / 4.0), format!("{:.1}", y_max * i as f64 / 4.0))).collect();
    svg_frame(title, "percentile", "latency (ms)", &body, &x_ticks, &y_ticks)
}

/// A value over time (one sample per second).
pub fn timeline_svg(samples: &[f64], title: &str, y_label: &str) -> String {
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = samples.len().max(2) as f64 - 1.0;
    let y_max = nice_max(samples.iter().cloned().fold(0.0, f64::max));
    let points: String = samples
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1} ", LEFT + plot_w * i as f64 / n, TOP + plot_h * (1.0 - v / y_max)))
        .collect();
    let body = format!(r#"<polyline fill="none" stroke="crimson" stroke-width="2" points="{points}"/>"#);
    let x_ticks: Vec<(f64, String)> =
        (0..=4).map(|i| (LEFT + plot_w * i as f64 / 4.0, format!("{:.0}", n * i as f64 / 4.0))).collect();
    let y_ticks: Vec<(f64, String)> =
        (0..=4).map(|i| (TOP + plot_h * (1.0 - i as f64 / 4.0), format!("{:.0}", y_max * i as f64 / 4.0))).collect();
    svg_frame(title, "seconds", y_label, &body, &x_ticks, &y_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_well_formed() {
        let mut hist = histogram();
        for v in 1..10_000u64 {
            record(&mut hist, v * 10);
        }
        let svg = latency_svg(&hist, "latency <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("&lt;test&gt;"));
        let summary = latency_summary(&hist);
        assert!(summary["p99_ms"].as_f64().unwrap() > summary["p50_ms"].as_f64().unwrap());
        let timeline = timeline_svg(&[1.0, 5.0, 3.0], "throughput", "per second");
        assert!(timeline.contains("polyline"));
    }
}
