//! Secret redaction: every occurrence of a secret value in a run's log lines and result is
//! replaced by `***` before anything is stored or published. Applied in exactly two places,
//! the run's logger and the conversion of the run's outcome, so no path can skip it.

use std::borrow::Cow;
use std::sync::Arc;

/// What a redacted secret becomes.
pub const MASK: &str = "***";

/// Replaces secret values with [`MASK`]. Cheap to clone; free when there are no secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Arc<[String]>,
}

impl Redactor {
    /// A redactor for these values (empty ones are ignored: they would match everywhere).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: secrets.into(),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The text with every secret masked.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        out
    }

    /// Masks in place.
    pub fn string(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.text(text) {
            *text = masked;
        }
    }

    /// Masks every string (keys too) of a JSON value.
    pub fn json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => self.string(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (mut k, mut v) in entries {
                    self.string(&mut k);
                    self.json(&mut v);
                    map.insert(k, v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_text_and_json() {
        let r = Redactor::new([
            "hunter2".to_string(),
            "hunter2-long".to_string(),
            String::new(),
        ]);
        assert_eq!(r.text("pw=hunter2-long and hunter2"), "pw=*** and ***");
        assert_eq!(r.text("nothing here"), "nothing here");
        let mut v = serde_json::json!({"a": ["x hunter2 y", 1], "hunter2": {"b": "hunter2"}});
        r.json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["x *** y", 1], "***": {"b": "***"}})
        );
        assert!(Redactor::default().is_empty());
    }
}
