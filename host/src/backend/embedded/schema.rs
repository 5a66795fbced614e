//! Users' JSON Schemas, made safe to validate. A schema is checked when its definition is
//! stored: every `$ref` must point into the schema itself, no chain of references may loop
//! back without descending into the instance (`{"allOf":[{"$ref":"#"}]}` would recurse for
//! ever), and the chains and fan-out that apply to one instance value are bounded, so no
//! schema and no instance can exhaust the stack or run unbounded. Validation then runs on
//! threads of its own with a large stack, within a time limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// The longest chain of subschemas that apply to one instance value (through `$ref`,
/// `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `dependentSchemas`).
pub const MAX_CHAIN: usize = 32;
/// The most subschema applications one instance value may cause (fan-out included).
pub const MAX_FANOUT: u64 = 10_000;
/// The deepest instance (`spec`) accepted for validation.
pub const MAX_INSTANCE_DEPTH: usize = 64;
/// How long one validation may take.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Each validation thread's stack.
const STACK: usize = 64 << 20;
/// Validation threads.
const THREADS: usize = 2;

/// Keywords whose subschemas apply to the same instance value.
const SAME_ONE: [&str; 4] = ["not", "if", "then", "else"];
const SAME_MANY: [&str; 3] = ["allOf", "anyOf", "oneOf"];
const SAME_MAP: [&str; 2] = ["dependentSchemas", "dependencies"];
/// Keywords whose subschemas apply to parts of the instance.
const DOWN_ONE: [&str; 9] = [
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "contains",
    "additionalItems",
    "items",
    "contentSchema",
    "prefixItems",
];
const DOWN_MAP: [&str; 2] = ["properties", "patternProperties"];
/// Keywords that only hold subschemas for reference.
const HOLDERS: [&str; 2] = ["$defs", "definitions"];
/// Reference keywords.
const REFS: [&str; 3] = ["$ref", "$dynamicRef", "$recursiveRef"];

/// One subschema: where it is, and the subschemas that apply to the same instance value.
struct Node {
    pointer: String,
    same: Vec<usize>,
}

struct Graph<'a> {
    nodes: Vec<Node>,
    by_pointer: HashMap<String, usize>,
    ids: HashMap<String, usize>,
    anchors: HashMap<String, usize>,
    /// References to resolve once every node is known: (from, the resource root, the ref).
    refs: Vec<(usize, usize, &'a str)>,
}

/// Checks a schema; the error names the path at fault.
pub fn check(schema: &Value) -> Result<(), String> {
    let mut g = Graph {
        nodes: Vec::new(),
        by_pointer: HashMap::new(),
        ids: HashMap::new(),
        anchors: HashMap::new(),
        refs: Vec::new(),
    };
    g.walk(schema, String::new(), None, 0)?;
    for (from, root, reference) in std::mem::take(&mut g.refs) {
        let to = g.resolve(root, reference).ok_or_else(|| {
            format!(
                "the $ref {reference:?} at {} does not point into this schema (references are never fetched)",
                shown(&g.nodes[from].pointer)
            )
        })?;
        g.nodes[from].same.push(to);
    }
    g.bounded()
}

fn shown(pointer: &str) -> String {
    format!("#{pointer}")
}

impl<'a> Graph<'a> {
    fn walk(
        &mut self,
        v: &'a Value,
        pointer: String,
        resource: Option<usize>,
        depth: usize,
    ) -> Result<Option<usize>, String> {
        if depth > 128 {
            return Err(format!(
                "the schema is nested too deeply at {}",
                shown(&pointer)
            ));
        }
        let Value::Object(map) = v else {
            // A boolean schema applies nothing further.
            return Ok(None);
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            pointer: pointer.clone(),
            same: Vec::new(),
        });
        self.by_pointer.insert(pointer.clone(), id);
        let mut root = resource.unwrap_or(id);
        if let Some(Value::String(s)) = map.get("$id").or_else(|| map.get("id")) {
            self.ids.insert(s.trim_end_matches('#').to_string(), id);
            root = id;
        }
        for key in ["$anchor", "$dynamicAnchor"] {
            if let Some(Value::String(a)) = map.get(key) {
                self.anchors.insert(a.clone(), id);
            }
        }
        for key in REFS {
            match map.get(key) {
                Some(Value::String(r)) => self.refs.push((id, root, r.as_str())),
                Some(_) => {
                    return Err(format!("{key} at {} is not a string", shown(&pointer)));
                }
                None => {}
            }
        }
        for (key, sub) in map {
            let k = key.as_str();
            let at = |suffix: &str| format!("{pointer}/{}{suffix}", escape(k));
            if SAME_ONE.contains(&k) {
                if let Some(c) = self.walk(sub, at(""), Some(root), depth + 1)? {
                    self.nodes[id].same.push(c);
                }
            } else if SAME_MANY.contains(&k) {
                for (i, s) in sub.as_array().into_iter().flatten().enumerate() {
                    if let Some(c) = self.walk(s, at(&format!("/{i}")), Some(root), depth + 1)? {
                        self.nodes[id].same.push(c);
                    }
                }
            } else if SAME_MAP.contains(&k) {
                for (name, s) in sub.as_object().into_iter().flatten() {
                    let p = at(&format!("/{}", escape(name)));
                    if let Some(c) = self.walk(s, p, Some(root), depth + 1)? {
                        self.nodes[id].same.push(c);
                    }
                }
            } else if DOWN_ONE.contains(&k) {
                match sub {
                    Value::Array(items) => {
                        for (i, s) in items.iter().enumerate() {
                            self.walk(s, at(&format!("/{i}")), Some(root), depth + 1)?;
                        }
                    }
                    s => {
                        self.walk(s, at(""), Some(root), depth + 1)?;
                    }
                }
            } else if DOWN_MAP.contains(&k) || HOLDERS.contains(&k) {
                for (name, s) in sub.as_object().into_iter().flatten() {
                    self.walk(s, at(&format!("/{}", escape(name))), Some(root), depth + 1)?;
                }
            }
        }
        Ok(Some(id))
    }

    /// The node a reference made inside the resource rooted at `root` points to.
    fn resolve(&self, root: usize, reference: &str) -> Option<usize> {
        let (base, fragment) = match reference.split_once('#') {
            Some((b, f)) => (b, f),
            None => (reference, ""),
        };
        let root = if base.is_empty() {
            root
        } else {
            *self.ids.get(base)?
        };
        if fragment.is_empty() {
            return Some(root);
        }
        if !fragment.starts_with('/') {
            return self.anchors.get(fragment).copied();
        }
        let decoded = percent_decode(fragment)?;
        let pointer = format!("{}{decoded}", self.nodes[root].pointer);
        self.by_pointer.get(&pointer).copied()
    }

    /// Refuses a loop of same-value applications, a chain longer than [`MAX_CHAIN`] and a
    /// fan-out beyond [`MAX_FANOUT`].
    fn bounded(&self) -> Result<(), String> {
        // Longest chain and fan-out from each node, by depth-first search; a node met again
        // while it is on the path is a loop.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done(usize, u64),
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if marks[start] != Mark::New {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = self.nodes[node].same.get(*next) {
                    *next += 1;
                    match marks[child] {
                        Mark::OnPath => {
                            let from = stack.iter().position(|(n, _)| *n == child).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from..]
                                .iter()
                                .map(|(n, _)| shown(&self.nodes[*n].pointer))
                                .collect();
                            cycle.push(shown(&self.nodes[child].pointer));
                            return Err(format!(
                                "its references loop without descending into the instance: {}",
                                cycle.join(" -> ")
                            ));
                        }
                        Mark::New => {
                            marks[child] = Mark::OnPath;
                            stack.push((child, 0));
                        }
                        Mark::Done(..) => {}
                    }
                    continue;
                }
                let (mut chain, mut fanout) = (1usize, 1u64);
                for &c in &self.nodes[node].same {
                    if let Mark::Done(ch, f) = marks[c] {
                        chain = chain.max(ch + 1);
                        fanout = fanout.saturating_add(f);
                    }
                }
                let at = shown(&self.nodes[node].pointer);
                if chain > MAX_CHAIN {
                    return Err(format!(
                        "more than {MAX_CHAIN} subschemas apply to one value in a chain from {at}"
                    ));
                }
                if fanout > MAX_FANOUT {
                    return Err(format!(
                        "more than {MAX_FANOUT} subschemas apply to one value from {at}"
                    ));
                }
                marks[node] = Mark::Done(chain, fanout);
                stack.pop();
            }
        }
        Ok(())
    }
}

/// A JSON-pointer token, escaped.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// A URI fragment, percent-decoded (JSON-pointer escapes stay as they are).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How deeply a value nests.
fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

/// Why an instance was not validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The schema cannot be used (stored before it was checked, say).
    #[error("failed to compile schema: {0}")]
    Schema(String),
    /// The instance does not validate.
    #[error("{0}")]
    Invalid(String),
    /// The instance nests more deeply than [`MAX_INSTANCE_DEPTH`].
    #[error("the spec nests more than {MAX_INSTANCE_DEPTH} levels deep")]
    TooDeep,
    /// Validation took longer than [`VALIDATION_TIMEOUT`].
    #[error("validation took longer than {VALIDATION_TIMEOUT:?}")]
    Timeout,
    /// The validation threads are gone.
    #[error("the validator is not running")]
    Stopped,
}

/// What holds a schema: the schema itself, or a stored definition.
pub trait HasSchema: Send + Sync {
    /// The JSON Schema.
    fn schema(&self) -> &Value;
}

impl HasSchema for Value {
    fn schema(&self) -> &Value {
        self
    }
}

impl HasSchema for crate::conveyor::ResourceDefinition {
    fn schema(&self) -> &Value {
        &self.schema
    }
}

type Job = (
    Arc<dyn HasSchema>,
    Value,
    tokio::sync::oneshot::Sender<Result<(), ValidationError>>,
);

/// Validates instances against checked schemas on threads of its own (with a large stack),
/// caching each schema's compiled validator.
pub struct Validator {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Default for Validator {
    fn default() -> Self {
        Validator::new()
    }
}

impl Validator {
    /// Starts the validation threads; they stop when the validator is dropped.
    pub fn new() -> Validator {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("schema-{i}"))
                .stack_size(STACK)
                .spawn(move || validate_loop(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a schema validation thread");
            }
        }
        Validator {
            jobs: Mutex::new(tx),
        }
    }

    /// Validates `instance` against `schema` (which [`check`] accepted when it was stored;
    /// it is checked again here for definitions stored before). The compiled schema is kept
    /// by the `Arc`'s address: pass the same `Arc` for the same schema (the store shares a
    /// definition until it is written), a new one when it changed.
    pub async fn validate(
        &self,
        schema: Arc<dyn HasSchema>,
        instance: Value,
    ) -> Result<(), ValidationError> {
        if depth(&instance) > MAX_INSTANCE_DEPTH {
            return Err(ValidationError::TooDeep);
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((schema, instance, done))
            .map_err(|_| ValidationError::Stopped)?;
        match tokio::time::timeout(VALIDATION_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ValidationError::Stopped),
            Err(_) => Err(ValidationError::Timeout),
        }
    }
}

/// A schema's compiled validator (or why it did not compile), with the schema's holder: kept
/// so that its address, the key, is not reused while the entry lives.
type Entry = (
    Arc<dyn HasSchema>,
    Result<Arc<jsonschema::Validator>, String>,
);

/// Compiled validators by the address of their schema's holder; a small cache, cleared when
/// it grows past its bound.
struct Compiled {
    by_schema: HashMap<usize, Entry>,
}

const COMPILED_CACHE: usize = 256;

fn validate_loop(rx: &Mutex<mpsc::Receiver<Job>>) {
    let mut cache = Compiled {
        by_schema: HashMap::new(),
    };
    loop {
        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((schema, instance, done)) = job else {
            return;
        };
        let key = Arc::as_ptr(&schema).cast::<()>() as usize;
        if cache.by_schema.len() >= COMPILED_CACHE && !cache.by_schema.contains_key(&key) {
            cache.by_schema.clear();
        }
        let compiled = cache
            .by_schema
            .entry(key)
            .or_insert_with(|| {
                let compiled = check(schema.schema()).and_then(|()| {
                    jsonschema::validator_for(schema.schema())
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                });
                (schema.clone(), compiled)
            })
            .1
            .clone();
        let result = match compiled {
            Err(e) => Err(ValidationError::Schema(e)),
            Ok(v) => match v.iter_errors(&instance).next() {
                Some(err) => Err(ValidationError::Invalid(upstream_message(&err))),
                None => Ok(()),
            },
        };
        let _ = done.send(result);
    }
}

/// A validation error in upstream's words (santhosh-tekuri/jsonschema v5, which upstream's
/// server uses): `validation failed: jsonschema: '<instance path>' does not validate with
/// inline-schema#<keyword path>: <message>`, so that scripts grepping upstream's errors keep
/// working. Upstream's schema URL is `file://<its working directory>/inline-schema`; the
/// host names no directory. The commonest messages (`required`, `type`) are upstream's too.
fn upstream_message(err: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind};
    let go_type = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let message = match &err.kind {
        ValidationErrorKind::Required { property } => format!(
            "missing properties: '{}'",
            property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned)
        ),
        ValidationErrorKind::Type {
            kind: TypeKind::Single(expected),
        } => format!("expected {expected}, but got {}", go_type(&err.instance)),
        _ => err.to_string(),
    };
    format!(
        "validation failed: jsonschema: '{}' does not validate with inline-schema#{}: {message}",
        err.instance_path, err.schema_path
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn self_reference_without_progress_is_refused() {
        let e = check(&json!({"allOf": [{"$ref": "#"}]})).unwrap_err();
        assert!(e.contains("# -> #/allOf/0 -> #"), "{e}");
    }

    #[test]
    fn a_cycle_through_two_definitions_is_refused() {
        let e = check(&json!({
            "$ref": "#/$defs/a",
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}
        }))
        .unwrap_err();
        assert!(e.contains("#/$defs/a"), "{e}");
    }

    #[test]
    fn recursion_through_the_instance_is_fine() {
        check(&json!({
            "type": "object",
            "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}
        }))
        .unwrap();
        check(&json!({"type": "object", "properties": {"a": {"type": "string"}}})).unwrap();
        check(&json!(true)).unwrap();
    }

    #[test]
    fn references_must_stay_in_the_schema() {
        assert!(check(&json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(check(&json!({"$ref": "#/$defs/missing"})).is_err());
        check(&json!({"$ref": "#node", "$defs": {"n": {"$anchor": "node", "type": "string"}}}))
            .unwrap();
    }

    #[test]
    fn fan_out_is_bounded() {
        // 3^10 applications to one value through 10 levels of three-way anyOf.
        let mut defs = serde_json::Map::new();
        for i in 0..10 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert("d10".into(), json!({"type": "string"}));
        let e = check(&json!({"$ref": "#/$defs/d0", "$defs": defs})).unwrap_err();
        assert!(
            e.contains("more than 10000 subschemas apply to one value"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn validation_runs_and_reports() {
        let v = Validator::new();
        let schema = Arc::new(json!({"type": "object", "required": ["a"]}));
        v.validate(schema.clone(), json!({"a": 1})).await.unwrap();
        let e = v.validate(schema.clone(), json!({})).await.unwrap_err();
        assert!(matches!(e, ValidationError::Invalid(_)), "{e}");
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert_eq!(
            v.validate(schema, deep).await,
            Err(ValidationError::TooDeep)
        );
        let bad = Arc::new(json!({"allOf": [{"$ref": "#"}]}));
        let e = v.validate(bad, json!({})).await.unwrap_err();
        assert!(matches!(e, ValidationError::Schema(_)), "{e}");
    }

    /// Upstream's conformance cases H11 and H12: the words scripts grep for.
    #[tokio::test]
    async fn errors_read_as_upstreams() {
        let v = Validator::new();
        let schema = Arc::new(json!({"type": "object", "properties": {
            "image": {"type": "string"}, "steps": {"type": "array"}}, "required": ["steps"]}));
        let e = v
            .validate(schema.clone(), json!({"image": "a"}))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("validation failed: jsonschema: '' does not validate with "),
            "{e}"
        );
        assert!(
            e.ends_with("#/required: missing properties: 'steps'"),
            "{e}"
        );
        let e = v
            .validate(schema, json!({"image": 5, "steps": []}))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("'/image'"), "{e}");
        assert!(
            e.ends_with("#/properties/image/type: expected string, but got number"),
            "{e}"
        );
    }
}
