//! Human-readable output of a run: a timeline summary for the terminal and an HTML page
//! that draws link, connection, publishes, acknowledgements and deliveries against
//! simulated time.

use std::fmt::Write as _;

use serde_json::Value;

use crate::runner::Outcome;

fn events(trace: &[String]) -> impl Iterator<Item = Value> + '_ {
    trace.iter().filter_map(|l| serde_json::from_str(l).ok())
}

fn t(v: &Value) -> u64 {
    v["t_ms"].as_u64().unwrap_or(0)
}

/// The lines worth reading: faults, link changes, up/down, wills, failures.
pub fn summary(o: &Outcome) -> String {
    let mut s = String::new();
    let interesting = [
        "fault",
        "up",
        "down",
        "will",
        "connect_failed",
        "disconnect_called",
        "boot",
        "refused",
        "publish_refused",
        "request_refused",
        "keepalive_expired",
        "error",
    ];
    let mut shown = 0;
    for e in events(&o.trace) {
        let what = e["what"].as_str().unwrap_or("");
        if !interesting.contains(&what) {
            continue;
        }
        shown += 1;
        if shown > 60 {
            continue;
        }
        let detail = e["step"].as_str().or(e["reason"].as_str()).or(e["topic"].as_str()).or(e["error"].as_str()).unwrap_or("");
        let _ = writeln!(s, "  {:>10.3} s  {:<8} {:<18} {}", t(&e) as f64 / 1000.0, e["who"].as_str().unwrap_or(""), what, detail);
    }
    if shown > 60 {
        let _ = writeln!(s, "  … {} more events (see --trace)", shown - 60);
    }
    let _ = writeln!(
        s,
        "\n  QoS 1 and 2: {} published, {} acknowledged, {} delivered, {} lost, {} duplicates; {} reconnects; {:.0} s simulated in {:.2} s",
        o.qos1_published, o.qos1_acked, o.qos1_delivered, o.qos1_lost, o.duplicates, o.reconnects, o.sim_seconds, o.wall_seconds
    );
    for c in &o.expectations {
        let _ = writeln!(s, "  [{}] {}: {}", if c.passed { "pass" } else { "FAIL" }, c.name, c.detail);
    }
    s
}

/// A self-contained HTML page with an SVG timeline.
pub fn html(o: &Outcome) -> String {
    let end = (o.sim_seconds * 1000.0).max(1.0);
    let width = 1200.0;
    let x = |ms: u64| 120.0 + (ms as f64 / end) * (width - 140.0);
    let lanes = ["link", "connection", "publish", "ack", "delivery", "duplicate", "fault"];
    let lane_y = |name: &str| 30.0 + 40.0 * lanes.iter().position(|l| *l == name).unwrap_or(0) as f64;
    let mut svg = String::new();
    for l in lanes {
        let _ = write!(
            svg,
            r##"<text x="5" y="{}" font-size="12">{l}</text><line x1="120" x2="{}" y1="{}" y2="{}" stroke="#ddd"/>"##,
            lane_y(l) + 4.0,
            width - 20.0,
            lane_y(l),
            lane_y(l)
        );
    }
    let mut link_down: Option<u64> = None;
    let mut conn_up: Option<u64> = None;
    let mut seen = std::collections::BTreeSet::new();
    let bar = |svg: &mut String, lane: &str, a: u64, b: u64, color: &str| {
        let _ = write!(svg, r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="10" fill="{color}"/>"#, x(a), lane_y(lane) - 5.0, (x(b) - x(a)).max(1.0));
    };
    let tick = |svg: &mut String, lane: &str, at: u64, color: &str, title: &str| {
        let _ = write!(
            svg,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{color}"><title>{title}</title></line>"#,
            x(at),
            lane_y(lane) - 8.0,
            lane_y(lane) + 8.0
        );
    };
    for e in events(&o.trace) {
        let at = t(&e);
        // A fleet's devices are `device-N`; the lanes show them together.
        let who = e["who"].as_str().unwrap_or("");
        let who = if who.starts_with("device") { "device" } else { who };
        match (who, e["what"].as_str().unwrap_or("")) {
            ("device", "link") => match e["state"].as_str() {
                Some("up") => {
                    if let Some(a) = link_down.take() {
                        bar(&mut svg, "link", a, at, "#e55");
                    }
                }
                _ => link_down = link_down.or(Some(at)),
            },
            ("device", "up") => conn_up = Some(at),
            ("device", "down") => {
                if let Some(a) = conn_up.take() {
                    bar(&mut svg, "connection", a, at, "#5a5");
                }
            }
            ("device", "publish") => tick(&mut svg, "publish", at, "#36c", &format!("seq {}", e["seq"])),
            ("device", "published") => tick(&mut svg, "ack", at, "#393", &format!("token {}", e["token"])),
            ("observer", "message") => {
                let seq = e["seq"].as_u64();
                if seq.is_some_and(|s| !seen.insert(s)) {
                    tick(&mut svg, "duplicate", at, "#c33", &format!("seq {}", e["seq"]));
                } else {
                    tick(&mut svg, "delivery", at, "#693", &format!("{} seq {}", e["topic"], e["seq"]));
                }
            }
            ("timeline", "fault") => tick(&mut svg, "fault", at, "#a0a", e["step"].as_str().unwrap_or("")),
            _ => {}
        }
    }
    let end_ms = end as u64;
    if let Some(a) = link_down {
        bar(&mut svg, "link", a, end_ms, "#e55");
    }
    if let Some(a) = conn_up {
        bar(&mut svg, "connection", a, end_ms, "#5a5");
    }
    let rows: String = o
        .expectations
        .iter()
        .map(|c| format!("<tr><td>{}</td><td>{}</td><td>{}</td></tr>", if c.passed { "pass" } else { "<b>FAIL</b>" }, c.name, html_escape(&c.detail)))
        .collect();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{name} seed {seed}</title>
<style>body{{font-family:sans-serif;margin:20px}} td{{padding:2px 8px}}</style></head><body>
<h1>{name} — seed {seed}: {verdict}</h1>
<p>QoS 1 and 2: {p} published, {a} acknowledged, {d} delivered, {l} lost, {dup} duplicates; {r} reconnects; {sim:.0} s simulated. Trace hash {h}.</p>
<svg width="{w}" height="{hgt}" xmlns="http://www.w3.org/2000/svg">{svg}
<text x="120" y="{axis}" font-size="11">0 s</text><text x="{wend}" y="{axis}" font-size="11">{sim:.0} s</text></svg>
<p>link: red = down. connection: green = up. Hover a tick for its detail.</p>
<table>{rows}</table></body></html>"#,
        name = html_escape(&o.scenario),
        seed = o.seed,
        verdict = if o.passed { "passed" } else { "FAILED" },
        p = o.qos1_published,
        a = o.qos1_acked,
        d = o.qos1_delivered,
        l = o.qos1_lost,
        dup = o.duplicates,
        r = o.reconnects,
        sim = o.sim_seconds,
        h = o.trace_hash,
        w = width,
        hgt = 30.0 + 40.0 * lanes.len() as f64,
        axis = 20.0 + 40.0 * lanes.len() as f64,
        wend = width - 60.0,
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
