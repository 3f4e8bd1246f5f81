//! Event schemas (PROTOCOL.md section 5): a JSON file mapping event types to
//! JSON Schemas (draft 2020-12), compiled once at start and checked against
//! every published payload of those types.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::ConfigError;
use crate::protocol::{ErrorCode, ProtocolError};

/// Compiled validators by event type.
pub struct Schemas {
    by_type: HashMap<String, jsonschema::Validator>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("types", &self.by_type.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Schemas {
    /// Reads and compiles the file at `path`; any problem names the
    /// `schemas` setting.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display();
        let text = std::fs::read(path)
            .map_err(|e| ConfigError::new("schemas", format!("cannot read `{shown}`: {e}")))?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| ConfigError::new("schemas", format!("`{shown}` is not JSON: {e}")))?;
        Self::from_value(value).map_err(|e| ConfigError::new("schemas", format!("`{shown}`: {e}")))
    }

    /// Compiles `{"event_type": schema, …}`.
    pub fn from_value(value: Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("must be a JSON object of event type to JSON Schema".into());
        };
        let mut by_type = HashMap::with_capacity(map.len());
        for (kind, schema) in map {
            let validator = jsonschema::draft202012::new(&schema)
                .map_err(|e| format!("the schema for `{kind}` is not valid: {e}"))?;
            by_type.insert(kind, validator);
        }
        Ok(Self { by_type })
    }

    /// Checks `payload` against the schema for `kind`, if there is one.
    pub fn check(&self, kind: &str, payload: &Map<String, Value>) -> Result<(), ProtocolError> {
        let Some(validator) = self.by_type.get(kind) else {
            return Ok(());
        };
        let instance = Value::Object(payload.clone());
        match validator.iter_errors(&instance).next() {
            None => Ok(()),
            Some(error) => {
                let path = error.instance_path().to_string();
                Err(ProtocolError::new(
                    ErrorCode::SchemaViolation,
                    format!("payload{path}: {error}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> Schemas {
        Schemas::from_value(json!({
            "scan_completed": {
                "type": "object",
                "required": ["files"],
                "properties": {"files": {"type": "integer", "minimum": 0}}
            }
        }))
        .unwrap()
    }

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn payloads_are_checked_by_type() {
        let s = schemas();
        assert!(
            s.check("scan_completed", &payload(json!({"files": 3})))
                .is_ok()
        );
        assert!(s.check("other", &payload(json!({"files": "x"}))).is_ok());
        let e = s
            .check("scan_completed", &payload(json!({"files": "x"})))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SchemaViolation);
        assert!(e.message.starts_with("payload/files:"), "{}", e.message);
        let e = s.check("scan_completed", &payload(json!({}))).unwrap_err();
        assert!(e.message.contains("files"), "{}", e.message);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Schemas::from_value(json!([1])).is_err());
        assert!(Schemas::from_value(json!({"t": {"type": 12}})).is_err());
        assert!(Schemas::from_value(json!({"t": {"$ref": "https://example.com/x.json"}})).is_err());
    }
}
