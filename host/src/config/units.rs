//! The config file's units: durations (`"30s"`, `"500ms"`) and sizes (`"64MiB"`), with an
//! error that shows the value and how to write it.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration such as `"30s"`.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); use a number and a unit, such as \"30s\" or \"500ms\""
        ))
    })
}

/// A size such as `"64MiB"`, in bytes.
pub(super) fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid size {s:?} ({e}); use a number and a unit, such as \"64MiB\""
            ))
        })
}

/// An optional [`duration`].
pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// An optional [`byte_size`].
pub(super) fn opt_byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    byte_size(d).map(Some)
}
