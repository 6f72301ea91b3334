//! The report as JSON: its schema version, its JSON Schema (committed as
//! docs/report.schema.json, checked against the types by a test), and NaN,
//! which JSON cannot hold: a measure that could not be taken is written as
//! null and read back as NaN.

use resid_io::{Classify, Component, ErrorClass};
use schemars::{json_schema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::aggregate::Report;

/// Version of the report's layout. 1: reports without the field (before the
/// report could be read back); 2: typed components, `schema_version`;
/// 3: expert and router components, the several-residual record
/// ([`crate::compare::Several`]).
pub const SCHEMA_VERSION: u32 = 3;

/// Why a report could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReportJsonError {
    #[error("not an analysis report: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("analysis report of schema version {found}; this resid reads version {expected} (run the analysis again)")]
    Version { found: u64, expected: u32 },
}

impl Classify for ReportJsonError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

/// Reads a report, checking its version first so an old one gets a message
/// about its version, not about the first field it lacks.
pub fn from_str(text: &str) -> Result<Report, ReportJsonError> {
    from_str_versioned(text)
}

/// [`from_str`] for any record carrying `schema_version`.
pub fn from_str_versioned<T: DeserializeOwned>(text: &str) -> Result<T, ReportJsonError> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let found = v
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    if found != SCHEMA_VERSION as u64 {
        return Err(ReportJsonError::Version {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(serde_json::from_value(v)?)
}

/// The JSON Schema of [`Report`], pretty-printed.
pub fn schema() -> String {
    let s = schemars::schema_for!(Report);
    serde_json::to_string_pretty(&s).expect("schema serializes") + "\n"
}

/// The JSON Schema of [`crate::compare::Several`] (committed as
/// docs/several.schema.json), pretty-printed.
pub fn several_schema() -> String {
    let s = schemars::schema_for!(crate::compare::Several);
    serde_json::to_string_pretty(&s).expect("schema serializes") + "\n"
}

/// A float written by serde_json: a number, or null for NaN.
pub fn nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`Component`] (defined in resid-io) as its lower-case names.
pub fn component_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
    json_schema!({ "type": "string", "enum": names })
}
