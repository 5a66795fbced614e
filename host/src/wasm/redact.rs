//! Secret redaction: every occurrence of a secret value in a run's log lines and result, and
//! in what the driver writes through the API client, is replaced by `***` before anything is
//! stored or published. Applied in the run's logger (every log line, label keys and values,
//! stdout and stderr included), in the conversion of the run's outcome and in the `client`
//! import, so no path can skip it.
//!
//! A stream cut into pieces (stdout and stderr are turned into lines, and long lines into
//! several) must not be cut inside a secret, or each piece would show a part of it in clear:
//! [`Redactor::across`] tells where one lies across a cut, so the cut can move.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// What a redacted secret becomes.
pub const MASK: &str = "***";

/// Replaces secret values with [`MASK`]. Cheap to clone; free when there are no secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Arc<[Secret]>,
}

/// One secret value, with where each byte value occurs in it, so that finding an occurrence
/// across a cut only tries the alignments that can match.
struct Secret {
    value: String,
    offsets: HashMap<u8, Vec<usize>>,
}

impl Secret {
    fn new(value: String) -> Secret {
        let mut offsets: HashMap<u8, Vec<usize>> = HashMap::new();
        for (i, b) in value.bytes().enumerate() {
            offsets.entry(b).or_default().push(i);
        }
        Secret { value, offsets }
    }
}

/// Whether a secret lies across a cut of a byte stream (see [`Redactor::across`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Across {
    /// No secret covers the cut: cutting there shows no part of one.
    Clear,
    /// A whole occurrence of a secret covers the cut: these bytes of the buffer.
    Secret(Range<usize>),
    /// The buffer ends inside what may be a secret covering the cut: more bytes are needed to
    /// tell.
    Unknown,
}

impl Redactor {
    /// A redactor for these values. A value's trailing line break is not part of what is
    /// masked (a secret read from a file often ends with one; masking the value without it
    /// masks every occurrence with it too), and empty values are ignored: they would match
    /// everywhere.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values
            .into_iter()
            .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
            .filter(|v| !v.is_empty())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: secrets.into_iter().map(Secret::new).collect(),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The length in bytes of the longest secret (0 without secrets): how far past a cut a
    /// secret covering it can reach.
    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, |s| s.value.len())
    }

    /// The text with every secret masked.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.value.as_str()) {
                out = Cow::Owned(out.replace(s.value.as_str(), MASK));
            }
        }
        out
    }

    /// Masks in place; `true` when something was masked.
    pub fn string(&self, text: &mut String) -> bool {
        match self.text(text) {
            Cow::Owned(masked) => {
                *text = masked;
                true
            }
            Cow::Borrowed(_) => false,
        }
    }

    /// Masks every string of a JSON value, object keys included, and every number whose
    /// digits contain a secret (it becomes the masked string); `true` when something was
    /// masked.
    pub fn json(&self, value: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        if self.is_empty() {
            return false;
        }
        match value {
            Value::String(s) => self.string(s),
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |masked, v| self.json(v) | masked),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                let mut masked = false;
                for (mut k, mut v) in entries {
                    masked |= self.string(&mut k);
                    masked |= self.json(&mut v);
                    map.insert(k, v);
                }
                masked
            }
            Value::Number(n) => {
                let mut digits = n.to_string();
                let masked = self.string(&mut digits);
                if masked {
                    *value = Value::String(digits);
                }
                masked
            }
            Value::Null | Value::Bool(_) => false,
        }
    }

    /// Whether an occurrence of a secret in `buf` covers all of the bytes `cut` (a non-empty
    /// range of `buf`): the bytes a cut would separate (the two around it) or remove (a line
    /// break). Of several such occurrences, the one that starts first (the longest of those)
    /// is named. With `complete`, `buf` is all there will be; otherwise an occurrence that
    /// may go on past its end is [`Across::Unknown`].
    pub fn across(&self, buf: &[u8], cut: Range<usize>, complete: bool) -> Across {
        let Some(&first) = buf.get(cut.start) else {
            return Across::Clear;
        };
        let mut found: Option<Range<usize>> = None;
        let mut unknown = false;
        for secret in self.secrets.iter() {
            let value = secret.value.as_bytes();
            let Some(offsets) = secret.offsets.get(&first) else {
                continue;
            };
            for &k in offsets {
                // The secret, its byte `k` at the cut's first byte, must reach the cut's end.
                let Some(start) = cut.start.checked_sub(k) else {
                    continue;
                };
                let end = start + value.len();
                if end < cut.end {
                    continue;
                }
                if end <= buf.len() {
                    if &buf[start..end] == value
                        && found
                            .as_ref()
                            .is_none_or(|f| start < f.start || (start == f.start && end > f.end))
                    {
                        found = Some(start..end);
                    }
                } else if !complete && buf[start..] == value[..buf.len() - start] {
                    unknown = true;
                }
            }
        }
        match found {
            Some(range) => Across::Secret(range),
            None if unknown => Across::Unknown,
            None => Across::Clear,
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

    #[test]
    fn says_whether_it_masked_and_masks_numbers() {
        let r = Redactor::new(["4242".to_string()]);
        let mut s = "pin 4242".to_string();
        assert!(r.string(&mut s));
        assert_eq!(s, "pin ***");
        assert!(!r.string(&mut s));
        let mut v = serde_json::json!({"pin": 4242, "other": 17, "list": [true, null, 142420]});
        assert!(r.json(&mut v));
        assert_eq!(
            v,
            serde_json::json!({"pin": "***", "other": 17, "list": [true, null, "1***0"]})
        );
        let mut clean = serde_json::json!({"a": [1, "b"]});
        assert!(!r.json(&mut clean));
        assert!(!Redactor::default().json(&mut v));
    }

    #[test]
    fn a_trailing_line_break_is_not_part_of_the_secret() {
        let r = Redactor::new(["key\n".to_string(), "\r\n".to_string()]);
        assert_eq!(r.longest(), 3);
        assert_eq!(r.text("the key\nand key"), "the ***\nand ***");
    }

    #[test]
    fn finds_a_secret_across_a_cut() {
        let r = Redactor::new(["hunter2".to_string(), "ab\ncd".to_string()]);
        let buf = b"xx hunter2 yy ab\ncd zz";
        // The two bytes around a cut after "hun".
        assert_eq!(r.across(buf, 5..7, false), Across::Secret(3..10));
        // A cut before or after the secret separates nothing of it.
        assert_eq!(r.across(buf, 2..4, false), Across::Clear);
        assert_eq!(r.across(buf, 9..11, false), Across::Clear);
        // A line break inside a secret.
        assert_eq!(r.across(buf, 16..17, false), Across::Secret(14..19));
        // The buffer ends inside what may be the secret: unknown until it is complete.
        assert_eq!(r.across(b"xx hunt", 5..7, false), Across::Unknown);
        assert_eq!(r.across(b"xx hunt", 5..7, true), Across::Clear);
        assert_eq!(r.across(b"xx hunx", 5..7, false), Across::Clear);
        assert_eq!(r.across(b"ab\n", 2..3, false), Across::Unknown);
        assert_eq!(Redactor::default().across(buf, 5..7, false), Across::Clear);
        assert_eq!(r.across(buf, 40..41, false), Across::Clear);
    }

    #[test]
    fn of_overlapping_secrets_the_first_and_longest_is_named() {
        let r = Redactor::new(["abcd".to_string(), "cdef".to_string(), "ab".to_string()]);
        assert_eq!(r.across(b"abcdef", 2..4, true), Across::Secret(0..4));
        assert_eq!(r.across(b"abcdef", 0..2, true), Across::Secret(0..4));
        assert_eq!(r.across(b"abcdef", 4..6, true), Across::Secret(2..6));
    }
}
