//! The safetensors header, parsed and checked by hand.
//!
//! Hand-written rather than `safetensors::SafeTensors::read_metadata` because
//! resid's users need errors that name the tensor and say what is wrong (the
//! crate answers "invalid shape, data type, or offset for tensor"), must see
//! duplicate names (serde silently keeps the last), and must not have the data
//! section required to be exactly covered before they can read anything.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Largest header accepted (the safetensors limit): a lying length cannot
/// make resid allocate more than this.
pub const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry as written in the header.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data_offsets: (u64, u64),
}

/// A parsed header: tensors in header order, and the free-form metadata.
#[derive(Debug, Default)]
pub struct RawHeader {
    pub tensors: Vec<(String, RawEntry)>,
    pub metadata: BTreeMap<String, String>,
}

/// Element size in bytes of every safetensors dtype whose elements fill whole
/// bytes; `None` for spellings resid does not know.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut out = RawHeader::default();
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate tensor name '{key}'"
                        )));
                    }
                    if key == "__metadata__" {
                        out.metadata = map.next_value()?;
                    } else {
                        let e: RawEntry = map.next_value().map_err(|e| {
                            serde::de::Error::custom(format!("tensor '{key}': {e}"))
                        })?;
                        out.tensors.push((key, e));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}
