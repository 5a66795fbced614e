//! JSON decoding as upstream's Go server and runtimes do it (`encoding/json`), for HTTP bodies
//! and NATS messages alike:
//!
//! - an object key matches a struct field case-insensitively (`"Name"` is `name`), the exact
//!   name winning when both appear;
//! - `null` for a declared field means the field's empty value (`"pipeline": null`,
//!   `"metadata": null`): Go leaves the zero value in place.
//!
//! Unknown fields are ignored, as serde does by default. Map keys (`metadata`, `spec`) are
//! data, not field names, and are kept exactly as sent.
//!
//! The folding happens in a [`serde::Deserializer`] over a parsed [`Value`]: serde hands it
//! each struct's field names, so no type needs to list them twice.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("{0}")]
    Syntax(serde_json::Error),
    /// JSON, but not the expected shape (a wrong field type, say).
    #[error("{0}")]
    Shape(serde_json::Error),
}

/// Decodes JSON bytes into `T` as Go's `encoding/json` would (see the module docs).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(DecodeError::Syntax)?;
    T::deserialize(Folded(value)).map_err(DecodeError::Shape)
}

/// The key of `object` that stands for `field`: the exact one if present, else the first
/// that equals it ignoring case.
fn key_for(object: &Map<String, Value>, field: &str) -> Option<String> {
    if object.contains_key(field) {
        return Some(field.to_string());
    }
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(field) || unicode_fold_eq(k, field))
        .cloned()
}

/// Case-insensitive equality beyond ASCII (Go folds Unicode too).
fn unicode_fold_eq(a: &str, b: &str) -> bool {
    !a.is_ascii() && a.to_lowercase() == b.to_lowercase()
}

/// Renames an object's keys to the declared fields they match, and drops declared fields
/// whose value is `null` (the field keeps its default, Go's zero value).
fn fold_object(mut object: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields {
        let Some(key) = key_for(&object, field) else {
            continue;
        };
        if let Some(value) = object.remove(&key)
            && !value.is_null()
        {
            out.insert((*field).to_string(), value);
        }
    }
    // Keys matching no field stay (serde ignores them, or a flattened map takes them).
    out.extend(object);
    out
}

/// A value being decoded with Go's rules.
struct Folded(Value);

impl<'de> de::Deserializer<'de> for Folded {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Seq(items.into_iter())),
            Value::Object(object) => visitor.visit_map(Entries::new(object)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Folded(other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(object) => visitor.visit_map(Entries::new(fold_object(object, fields))),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Folded(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl Entries {
    fn new(object: Map<String, Value>) -> Self {
        Entries {
            iter: object.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a map value was asked for before its key"))?;
        seed.deserialize(Folded(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conveyor::{DriverMessage, Pipeline, Resource};

    #[test]
    fn field_names_match_case_insensitively() {
        let r: Resource = decode(
            br#"{"Name":"a","RESOURCE":"pipe","Spec":{"Image":"x"},"Metadata":{"Owner":"me"}}"#,
        )
        .unwrap();
        assert_eq!((r.name.as_str(), r.resource.as_str()), ("a", "pipe"));
        // Map keys and the spec are data: kept as sent.
        assert_eq!(r.spec["Image"], "x");
        assert_eq!(r.metadata["Owner"], "me");
    }

    #[test]
    fn the_exact_name_wins_in_either_order() {
        for body in [
            br#"{"Name":"folded","name":"exact"}"#.as_slice(),
            br#"{"name":"exact","Name":"folded"}"#.as_slice(),
        ] {
            let r: Resource = decode(body).unwrap();
            assert_eq!(r.name, "exact");
        }
    }

    #[test]
    fn null_is_the_empty_value() {
        let r: Resource = decode(
            br#"{"name":"a","resource":"pipe","pipeline":null,"metadata":null,"id":null,"spec":null}"#,
        )
        .unwrap();
        assert!(r.pipeline.is_empty() && r.metadata.is_empty() && r.id.is_empty());
        let p: Pipeline = decode(
            br#"{"Name":"p","resource":"pipe","Steps":[{"ID":"1","Driver":"builder","name":null}],"metadata":null}"#,
        )
        .unwrap();
        assert_eq!(p.steps[0].driver, "builder");
        assert_eq!(p.steps[0].id, "1");
        assert!(p.metadata.is_empty());
    }

    #[test]
    fn wrong_types_and_bad_json_are_errors() {
        assert!(matches!(
            decode::<Resource>(br#"{"name":5}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode::<Resource>(br#"{"metadata":{"a":1}}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode::<Resource>(b"{"),
            Err(DecodeError::Syntax(_))
        ));
    }

    #[test]
    fn driver_messages_fold_too() {
        let m: DriverMessage =
            decode(br#"{"Event":"create","Payload":"{}","RUN_ID":"r","id":null}"#).unwrap();
        assert_eq!(
            (m.event.as_str(), m.payload.as_str(), m.run_id.as_str()),
            ("create", "{}", "r")
        );
        assert!(m.id.is_empty());
    }
}
