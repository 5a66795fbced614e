//! A fixture file for `conveyor-host test`: one event for a driver, the store its API client
//! reads from, and what the run should come to. The format is TOML (documented in
//! docs/drivers.md, "Testing a driver"); paths in it are relative to the fixture's own
//! directory. Reading one checks everything that can be checked without running it, so a bad
//! fixture is refused with its file and the problem, before any driver runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::result::Outcome;

/// Why a fixture file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct FixtureError {
    /// The fixture file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default = "create")]
    event: String,
    resource: Option<Value>,
    resource_file: Option<PathBuf>,
    #[serde(default)]
    definitions: Vec<Value>,
    #[serde(default)]
    definition_files: Vec<PathBuf>,
    #[serde(default)]
    resources: Vec<Value>,
    #[serde(default)]
    resource_files: Vec<PathBuf>,
    #[serde(default = "first")]
    attempt: u32,
    pipeline: Option<String>,
    expect: Option<ExpectFile>,
}

fn create() -> String {
    "create".into()
}

fn first() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    outcome: Option<String>,
    message: Option<String>,
    message_matches: Option<String>,
    data: Option<Value>,
    logs: Option<ExpectLogs>,
    #[serde(default)]
    resources: Vec<ExpectResource>,
}

/// What the run's log should hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectLogs {
    /// How many lines (the driver's, stdout and stderr included; not the host's).
    pub count: Option<usize>,
    /// Messages that must appear, in this order (others may come between them).
    #[serde(default)]
    pub messages: Vec<String>,
    /// Label sets each of which some line must carry (a line may have more labels).
    #[serde(default)]
    pub labels: Vec<BTreeMap<String, String>>,
}

/// A resource the driver should have created or updated through its client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectResource {
    /// Its type.
    pub resource: String,
    /// Its name.
    pub name: String,
    /// A subset its spec must contain.
    pub spec: Option<Value>,
    /// Its version after the run (`"1"` for a created one).
    pub version: Option<String>,
}

/// A fixture, read and checked: everything inline, paths resolved and read.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The event name.
    pub event: String,
    /// The resource the event carries, as JSON.
    pub resource: Value,
    /// Resource definitions the client's store holds.
    pub definitions: Vec<Value>,
    /// Resources the client's store holds besides the event's.
    pub resources: Vec<Value>,
    /// The delivery's attempt number.
    pub attempt: u32,
    /// The pipeline the event belongs to, if any.
    pub pipeline: Option<String>,
    /// What the run should come to; `None`: print what it did.
    pub expect: Option<Expect>,
}

/// What a run should come to. Every field is optional; the ones given must all hold.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The outcome: `success`, `failure`, `retry` or a failure kind (`trap`, ...).
    pub outcome: Option<Outcome>,
    /// The result's message, exactly.
    pub message: Option<String>,
    /// A regular expression the message must match.
    pub message_matches: Option<regex::Regex>,
    /// A JSON subset the result's data must contain.
    pub data: Option<Value>,
    /// What the log should hold.
    pub logs: Option<ExpectLogs>,
    /// Resources the driver should have written through its client.
    pub resources: Vec<ExpectResource>,
}

impl Fixture {
    /// Reads and checks a fixture file.
    pub fn read(file: &Path) -> Result<Fixture, FixtureError> {
        let error = |problem: String| FixtureError {
            file: file.to_path_buf(),
            problem,
        };
        let text =
            std::fs::read_to_string(file).map_err(|e| error(format!("cannot read it: {e}")))?;
        Fixture::parse(&text, file).map_err(error)
    }

    /// Parses fixture text read from `file` (whose directory relative paths start from).
    pub fn parse(text: &str, file: &Path) -> Result<Fixture, String> {
        let raw: FixtureFile = toml::from_str(text)
            .map_err(|e| format!("not a valid fixture: {}", e.to_string().trim_end()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let read_json = |what: &str, path: &Path| -> Result<Value, String> {
            let full = base.join(path);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("{what} {}: cannot read it: {e}", full.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{what} {}: not JSON: {e}", full.display()))
        };
        let resource = match (raw.resource, &raw.resource_file) {
            (Some(r), None) => r,
            (None, Some(path)) => read_json("resource_file", path)?,
            (Some(_), Some(_)) => {
                return Err("give either `resource` or `resource_file`, not both".into());
            }
            (None, None) => {
                return Err(
                    "no resource: give `resource` (a table) or `resource_file` (a JSON file)"
                        .into(),
                );
            }
        };
        require_object("resource", &resource, &["resource", "name"])?;
        let mut definitions = raw.definitions;
        for path in &raw.definition_files {
            definitions.push(read_json("definition_files:", path)?);
        }
        for (i, d) in definitions.iter().enumerate() {
            require_object(&format!("definition {}", i + 1), d, &["name"])?;
        }
        let mut resources = raw.resources;
        for path in &raw.resource_files {
            resources.push(read_json("resource_files:", path)?);
        }
        for (i, r) in resources.iter().enumerate() {
            require_object(&format!("resources[{}]", i + 1), r, &["resource", "name"])?;
        }
        if raw.event.trim().is_empty() {
            return Err("`event` is empty".into());
        }
        if raw.attempt == 0 {
            return Err("`attempt` counts from 1".into());
        }
        let expect = raw.expect.map(expect).transpose()?;
        Ok(Fixture {
            event: raw.event,
            resource,
            definitions,
            resources,
            attempt: raw.attempt,
            pipeline: raw.pipeline.filter(|p| !p.is_empty()),
            expect,
        })
    }
}

fn expect(raw: ExpectFile) -> Result<Expect, String> {
    let outcome = raw
        .outcome
        .map(|o| {
            Outcome::parse(&o).ok_or_else(|| {
                format!(
                    "expect.outcome {o:?} is not an outcome: use success, failure, retry or a \
                     failure kind (trap, cpu-exceeded, wall-timeout, memory-exceeded, log-limit, \
                     denied, result-too-large, invalid-result, instantiate)"
                )
            })
        })
        .transpose()?;
    let message_matches = raw
        .message_matches
        .map(|m| {
            regex::Regex::new(&m)
                .map_err(|e| format!("expect.message_matches is not a regular expression: {e}"))
        })
        .transpose()?;
    Ok(Expect {
        outcome,
        message: raw.message,
        message_matches,
        data: raw.data,
        logs: raw.logs,
        resources: raw.resources,
    })
}

/// A JSON object with non-empty strings under `keys`.
fn require_object(what: &str, v: &Value, keys: &[&str]) -> Result<(), String> {
    let Some(map) = v.as_object() else {
        return Err(format!("{what} is not an object"));
    };
    for key in keys {
        if map
            .get(*key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("{what} has no `{key}`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Fixture, String> {
        Fixture::parse(text, Path::new("/nowhere/f.toml"))
    }

    #[test]
    fn a_full_fixture_reads() {
        let f = parse(
            r#"
event = "update"
attempt = 2
resource = { resource = "t", name = "a", spec = { n = 1 } }
[[definitions]]
name = "t"
schema = { type = "object" }
[expect]
outcome = "cpu-exceeded"
message_matches = "^the driver"
data = { n = 1 }
[expect.logs]
count = 2
messages = ["one"]
labels = [{ step = "1" }]
[[expect.resources]]
resource = "t"
name = "b"
version = "1"
"#,
        )
        .unwrap();
        assert_eq!(f.event, "update");
        assert_eq!(f.attempt, 2);
        assert_eq!(f.resource["spec"]["n"], 1);
        let e = f.expect.unwrap();
        assert_eq!(e.outcome.unwrap().as_str(), "cpu-exceeded");
        assert!(e.message_matches.unwrap().is_match("the driver used"));
        assert_eq!(e.logs.unwrap().labels[0]["step"], "1");
        assert_eq!(e.resources[0].name, "b");
    }

    #[test]
    fn bad_fixtures_say_what_is_wrong() {
        let no_resource = parse("event = \"create\"").unwrap_err();
        assert!(no_resource.contains("no resource"), "{no_resource}");
        let unknown =
            parse("resource = { resource = \"t\", name = \"a\" }\nbogus = 1").unwrap_err();
        assert!(unknown.contains("bogus"), "{unknown}");
        let outcome =
            parse("resource = { resource = \"t\", name = \"a\" }\n[expect]\noutcome = \"fine\"")
                .unwrap_err();
        assert!(outcome.contains("\"fine\" is not an outcome"), "{outcome}");
        let regex = parse(
            "resource = { resource = \"t\", name = \"a\" }\n[expect]\nmessage_matches = \"(\"",
        )
        .unwrap_err();
        assert!(regex.contains("not a regular expression"), "{regex}");
        let nameless = parse("resource = { resource = \"t\" }").unwrap_err();
        assert!(nameless.contains("resource has no `name`"), "{nameless}");
        let missing = parse("resource_file = \"gone.json\"").unwrap_err();
        assert!(missing.contains("/nowhere/gone.json"), "{missing}");
    }

    #[test]
    fn the_error_names_the_file() {
        let e = Fixture::read(Path::new("/nowhere/f.toml")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nowhere/f.toml: cannot read it"),
            "{e}"
        );
    }
}
