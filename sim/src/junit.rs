//! A sweep as a JUnit XML report, the format GitLab, Jenkins and GitHub test reporters read:
//! one `<testsuite>` per scenario, one `<testcase>` per seed, a `<failure>` naming the
//! failed expectations with their details and the command that replays the run.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::runner::Outcome;

/// One run of a sweep and how to replay it.
pub struct Run<'a> {
    pub outcome: &'a Outcome,
    /// `mqtt-sim … run FILE --seed N`.
    pub replay: String,
}

/// The report for `runs`, grouped by scenario in the order given.
pub fn report(runs: &[Run<'_>]) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let failures = runs.iter().filter(|r| !r.outcome.passed).count();
    let time: f64 = runs.iter().map(|r| r.outcome.wall_seconds).sum();
    // Writing to a Vec cannot fail.
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let suites = element(
        "testsuites",
        &[
            ("name", "mqtt-sim sweep".to_string()),
            ("tests", runs.len().to_string()),
            ("failures", failures.to_string()),
            ("errors", "0".to_string()),
            ("time", format!("{time:.3}")),
        ],
    );
    let _ = w.write_event(Event::Start(suites));
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.outcome.scenario.as_str()) {
            names.push(&r.outcome.scenario);
        }
    }
    for name in names {
        let cases: Vec<&Run<'_>> = runs.iter().filter(|r| r.outcome.scenario == name).collect();
        let suite = element(
            "testsuite",
            &[
                ("name", name.to_string()),
                ("tests", cases.len().to_string()),
                ("failures", cases.iter().filter(|r| !r.outcome.passed).count().to_string()),
                ("errors", "0".to_string()),
                ("skipped", "0".to_string()),
                ("time", format!("{:.3}", cases.iter().map(|r| r.outcome.wall_seconds).sum::<f64>())),
            ],
        );
        let _ = w.write_event(Event::Start(suite));
        for r in cases {
            write_case(&mut w, r);
        }
        let _ = w.write_event(Event::End(BytesEnd::new("testsuite")));
    }
    let _ = w.write_event(Event::End(BytesEnd::new("testsuites")));
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// An element's start tag with its attributes (escaped by quick-xml).
fn element<'a>(name: &'a str, attributes: &[(&str, String)]) -> BytesStart<'a> {
    let mut e = BytesStart::new(name);
    for (k, v) in attributes {
        e.push_attribute((*k, v.as_str()));
    }
    e
}

fn write_case(w: &mut Writer<Vec<u8>>, r: &Run<'_>) {
    let o = r.outcome;
    let case = element(
        "testcase",
        &[("classname", format!("mqtt-sim.{}", o.scenario)), ("name", format!("seed {}", o.seed)), ("time", format!("{:.3}", o.wall_seconds))],
    );
    if o.passed {
        let _ = w.write_event(Event::Empty(case));
        return;
    }
    let _ = w.write_event(Event::Start(case));
    let failed: Vec<&crate::runner::Check> = o.expectations.iter().filter(|c| !c.passed).collect();
    let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
    let failure = element("failure", &[("message", format!("failed: {}", names.join(", "))), ("type", "expectation".to_string())]);
    let mut body: String = failed.iter().map(|c| format!("{}: {}\n", c.name, c.detail)).collect();
    body.push_str(&format!("replay: {}\n", r.replay));
    let _ = w.write_event(Event::Start(failure));
    let _ = w.write_event(Event::Text(BytesText::new(&body)));
    let _ = w.write_event(Event::End(BytesEnd::new("failure")));
    let _ = w.write_event(Event::End(BytesEnd::new("testcase")));
}
