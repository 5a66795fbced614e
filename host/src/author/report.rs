//! What a test runner prints: whether a run met its fixture's expectations, and if not, each
//! difference on a line of its own (`data.steps: expected 3, got 2`); and what a run did (its
//! result, its log, what it wrote), shown for a fixture without expectations and under a
//! failed one.

use std::fmt::Write;

use serde_json::Value;

use super::fixture::{Expect, ExpectLogs};
use super::runner::Ran;
use crate::conveyor::Log;

/// The label the host puts on its own notes in a run's log.
const HOST_LINE: (&str, &str) = ("source", "host");

/// The driver's own lines (its log calls, stdout and stderr), not the host's notes.
fn driver_lines(ran: &Ran) -> Vec<&Log> {
    ran.logs
        .iter()
        .filter(|l| l.labels.get(HOST_LINE.0).map(String::as_str) != Some(HOST_LINE.1))
        .collect()
}

/// Every way the run differs from `expect`; empty when it meets it.
pub fn differences(expect: &Expect, ran: &Ran) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(want) = expect.outcome
        && want != ran.outcome
    {
        out.push(format!("outcome: expected {want}, got {}", ran.outcome));
    }
    if let Some(want) = &expect.message
        && *want != ran.message
    {
        out.push(format!("message: expected {want:?}, got {:?}", ran.message));
    }
    if let Some(re) = &expect.message_matches
        && !re.is_match(&ran.message)
    {
        out.push(format!(
            "message: expected a match of /{re}/, got {:?}",
            ran.message
        ));
    }
    if let Some(want) = &expect.data {
        subset("data", want, &ran.data, &mut out);
    }
    if let Some(logs) = &expect.logs {
        log_differences(logs, &driver_lines(ran), &mut out);
    }
    for want in &expect.resources {
        let key = format!("{}/{}", want.resource, want.name);
        let Some(got) = ran
            .written
            .iter()
            .find(|r| r.resource == want.resource && r.name == want.name)
        else {
            let written: Vec<String> = ran
                .written
                .iter()
                .map(|r| format!("{}/{}", r.resource, r.name))
                .collect();
            out.push(format!(
                "resources: {key} was not created or updated (written: {})",
                if written.is_empty() {
                    "nothing".to_string()
                } else {
                    written.join(", ")
                }
            ));
            continue;
        };
        if let Some(version) = &want.version
            && got.metadata.get("version") != Some(version)
        {
            out.push(format!(
                "resources.{key}.version: expected {version:?}, got {:?}",
                got.metadata.get("version").map_or("", String::as_str)
            ));
        }
        if let Some(spec) = &want.spec {
            subset(&format!("resources.{key}.spec"), spec, &got.spec, &mut out);
        }
    }
    out
}

fn log_differences(want: &ExpectLogs, lines: &[&Log], out: &mut Vec<String>) {
    if let Some(count) = want.count
        && count != lines.len()
    {
        out.push(format!("logs: expected {count} lines, got {}", lines.len()));
    }
    // In order: each message is looked for after the line the one before it matched.
    let mut from = 0;
    for m in &want.messages {
        match lines[from..].iter().position(|l| l.message == *m) {
            Some(i) => from += i + 1,
            None => {
                let anywhere = lines.iter().any(|l| l.message == *m);
                out.push(if anywhere {
                    format!("logs: line {m:?} is there, but not after the lines expected before it")
                } else {
                    format!("logs: no line {m:?}")
                });
            }
        }
    }
    for labels in &want.labels {
        let carried = lines
            .iter()
            .any(|l| labels.iter().all(|(k, v)| l.labels.get(k) == Some(v)));
        if !carried {
            let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(format!("logs: no line with labels {{{}}}", text.join(", ")));
        }
    }
}

/// Whether `got` contains `want`: objects need `want`'s keys (recursively), arrays the same
/// length with each element contained, anything else equality. Each difference is pushed
/// with its path.
pub fn subset(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => subset(&p, wv, gv, out),
                    None => out.push(format!("{p}: expected {wv}, missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                subset(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        // TOML has one number type per kind; 2 and 2.0 are the same expectation.
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => {}
        (w, g) if w == g => {}
        (w, g) => out.push(format!("{path}: expected {w}, got {g}")),
    }
}

/// What the run did, indented by `indent`: the outcome and message, the data, the log lines
/// and the resources written.
pub fn describe(ran: &Ran, indent: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{indent}outcome: {}", ran.outcome);
    let _ = writeln!(s, "{indent}message: {:?}", ran.message);
    if !ran.data.is_null() {
        let _ = writeln!(s, "{indent}data:    {}", ran.data);
    }
    let _ = writeln!(s, "{indent}log ({} lines):", ran.logs.len());
    for l in &ran.logs {
        let labels: Vec<String> = l.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if labels.is_empty() {
            let _ = writeln!(s, "{indent}  {}", l.message);
        } else {
            let _ = writeln!(s, "{indent}  [{}] {}", labels.join(" "), l.message);
        }
    }
    for r in &ran.written {
        let _ = writeln!(
            s,
            "{indent}wrote {}/{} (version {}): {}",
            r.resource,
            r.name,
            r.metadata.get("version").map_or("?", String::as_str),
            r.spec
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::result::Outcome;
    use crate::wasm::FailureKind;

    fn line(message: &str, labels: &[(&str, &str)]) -> Log {
        Log {
            runid: "R".into(),
            driver: "d".into(),
            pipeline: String::new(),
            timestamp: String::new(),
            message: message.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn ran() -> Ran {
        Ran {
            outcome: Outcome::Success,
            message: "reconciled a".into(),
            data: json!({"steps": 2, "nested": {"k": [1, 2]}, "extra": true}),
            logs: vec![
                line("step 1", &[("step", "1")]),
                line("step 2", &[("step", "2")]),
                line("a note", &[("source", "host")]),
            ],
            written: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn a_run_that_meets_its_expectations_has_no_differences() {
        let expect = Expect {
            outcome: Some(Outcome::Success),
            message: Some("reconciled a".into()),
            message_matches: Some(regex::Regex::new("^reconciled").unwrap()),
            data: Some(json!({"steps": 2.0, "nested": {"k": [1, 2]}})),
            logs: Some(ExpectLogs {
                count: Some(2),
                messages: vec!["step 1".into(), "step 2".into()],
                labels: vec![BTreeMap::from([("step".into(), "2".into())])],
            }),
            resources: Vec::new(),
        };
        assert_eq!(differences(&expect, &ran()), Vec::<String>::new());
    }

    #[test]
    fn each_difference_is_a_line_with_its_path() {
        let expect = Expect {
            outcome: Some(Outcome::Failed(FailureKind::Trap)),
            message: Some("other".into()),
            data: Some(json!({"steps": 3, "nested": {"k": [1, 3]}, "gone": 1})),
            logs: Some(ExpectLogs {
                count: Some(1),
                messages: vec!["step 2".into(), "step 1".into(), "never".into()],
                labels: vec![BTreeMap::from([("step".into(), "9".into())])],
            }),
            resources: vec![super::super::fixture::ExpectResource {
                resource: "t".into(),
                name: "b".into(),
                spec: None,
                version: None,
            }],
            ..Default::default()
        };
        // Sorted: the order of an object's keys is serde_json's.
        let mut got = differences(&expect, &ran());
        got.sort();
        assert_eq!(
            got,
            [
                "data.gone: expected 1, missing",
                "data.nested.k[1]: expected 3, got 2",
                "data.steps: expected 3, got 2",
                "logs: expected 1 lines, got 2",
                "logs: line \"step 1\" is there, but not after the lines expected before it",
                "logs: no line \"never\"",
                "logs: no line with labels {step=9}",
                "message: expected \"other\", got \"reconciled a\"",
                "outcome: expected trap, got success",
                "resources: t/b was not created or updated (written: nothing)",
            ]
        );
    }
}
