//! The OpenAPI 3 description of the HTTP routes, served as `GET /openapi.json` on each HTTP
//! listener (as vLLM and TGI serve theirs).
//!
//! This module owns the documents and their assembly. The business and management documents
//! are written by hand next to this file (`openapi/business.json`, `openapi/management.json`);
//! the metrics plane's one route is described here. A listener's document holds exactly the
//! routes that listener serves: the union of its planes' documents when planes share an address
//! (`ipAddress:port` equal to the management address), and the PD role routes only in dmi mode.
//! Placeholders are filled per instance: `{{MODEL}}` (the served `modelName`, so the `{model}`
//! path parameter and the OpenAI `model` field list the one accepted value), `{{VOCAB_MAX}}`
//! (the largest token id a request may carry) and `{{VERSION}}`.
//!
//! The documents are checked in CI against a live daemon by `schemathesis` (`tests/openapi.rs`):
//! every response must match the schema and status codes described here, and none may be a 5xx.

use crate::config::Plane;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

/// Where each listener serves its document.
pub const PATH: &str = "/openapi.json";

const BUSINESS: &str = include_str!("openapi/business.json");
const MANAGEMENT: &str = include_str!("openapi/management.json");

/// Path prefixes of the PD role routes, described only in dmi mode.
const ROLE_PREFIXES: [&str; 2] = ["/v1/role/", "/v2/role/"];

/// What the documents are filled in with.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The served model's name (`modelName`).
    pub model: String,
    /// This build's version.
    pub version: String,
    /// The largest token id requests may name (vocabulary size − 1).
    pub vocab_max: u64,
    /// `inferMode: "dmi"`: the role routes exist.
    pub dmi: bool,
}

/// The document for a listener serving `planes`. Planes without HTTP routes are ignored.
pub fn document(planes: &[Plane], inst: &Instance) -> Result<Value, serde_json::Error> {
    let mut parts = Vec::new();
    for p in planes {
        match p {
            Plane::Business => parts.push(serde_json::from_str::<Value>(BUSINESS)?),
            Plane::Management => {
                let mut m: Value = serde_json::from_str(MANAGEMENT)?;
                if !inst.dmi {
                    if let Some(paths) = m.get_mut("paths").and_then(Value::as_object_mut) {
                        paths.retain(|k, _| !ROLE_PREFIXES.iter().any(|r| k.starts_with(r)));
                    }
                }
                parts.push(m);
            }
            Plane::Metrics => parts.push(metrics_part()),
            Plane::InterComm | Plane::InterNode => {}
        }
    }
    let mut doc = merge(parts, planes);
    fill(&mut doc, inst);
    Ok(doc)
}

/// A router answering `GET /openapi.json` with `doc`.
pub fn router(doc: Value) -> Router {
    // Rendered once; each reply shares the bytes.
    let body = Bytes::from(doc.to_string());
    Router::new().route(
        PATH,
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
        }),
    )
}

/// The metrics plane: `/metrics` in Prometheus text format.
fn metrics_part() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "mindieservice_daemon metrics plane", "version": "{{VERSION}}"},
        "paths": {
            "/metrics": {"get": {
                "operationId": "metrics",
                "tags": ["Metrics"],
                "summary": "MindIE's metrics in Prometheus text format (no name prefix, label model_name)",
                "responses": {
                    "200": {"description": "Prometheus text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "503": {"description": "Metrics are turned off (MIES_SERVICE_MONITOR_MODE=0)",
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["error", "error_type"],
                                "properties": {"error": {"type": "string"},
                                               "error_type": {"type": "string"}}}}}}
                }
            }}
        },
        "components": {}
    })
}

/// One document from several: paths and components united (a component defined by two parts
/// keeps the first definition: the parts define shared names identically), the title naming
/// the planes.
fn merge(parts: Vec<Value>, planes: &[Plane]) -> Value {
    let mut parts = parts.into_iter();
    let Some(mut doc) = parts.next() else {
        return json!({
            "openapi": "3.0.3",
            "info": {"title": "mindieservice_daemon", "version": "{{VERSION}}"},
            "paths": {}
        });
    };
    for part in parts {
        if let (Some(into), Some(from)) = (
            doc.get_mut("paths").and_then(Value::as_object_mut),
            part.get("paths").and_then(Value::as_object),
        ) {
            for (k, v) in from {
                into.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let Some(from) = part.get("components").and_then(Value::as_object) else {
            continue;
        };
        let into = doc
            .as_object_mut()
            .map(|d| d.entry("components").or_insert_with(|| json!({})));
        let Some(into) = into.and_then(Value::as_object_mut) else {
            continue;
        };
        for (kind, defs) in from {
            let slot = into.entry(kind.clone()).or_insert_with(|| json!({}));
            if let (Some(slot), Some(defs)) = (slot.as_object_mut(), defs.as_object()) {
                for (name, def) in defs {
                    slot.entry(name.clone()).or_insert_with(|| def.clone());
                }
            }
        }
    }
    if planes.len() > 1 {
        let names: Vec<&str> = planes
            .iter()
            .filter_map(|p| match p {
                Plane::Business => Some("business"),
                Plane::Management => Some("management"),
                Plane::Metrics => Some("metrics"),
                _ => None,
            })
            .collect();
        doc["info"]["title"] = json!(format!("mindieservice_daemon {} planes", names.join(" + ")));
    }
    doc
}

/// Replaces the placeholders wherever a string is exactly one of them.
fn fill(v: &mut Value, inst: &Instance) {
    if v.as_str() == Some("{{VOCAB_MAX}}") {
        *v = json!(inst.vocab_max);
        return;
    }
    match v {
        Value::String(s) if s == "{{MODEL}}" => *s = inst.model.clone(),
        Value::String(s) if s == "{{VERSION}}" => *s = inst.version.clone(),
        Value::Array(items) => items.iter_mut().for_each(|i| fill(i, inst)),
        Value::Object(map) => map.values_mut().for_each(|i| fill(i, inst)),
        _ => {}
    }
}

/// Every `$ref` in `v` that does not resolve inside `doc` (a broken document), for tests.
pub fn dangling_refs(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_refs(doc, doc, &mut out);
    out
}

fn walk_refs(doc: &Value, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let resolved = r
                    .strip_prefix('#')
                    .and_then(|pointer| doc.pointer(pointer))
                    .is_some();
                if !resolved {
                    out.push(r.clone());
                }
            }
            map.values().for_each(|i| walk_refs(doc, i, out));
        }
        Value::Array(items) => items.iter().for_each(|i| walk_refs(doc, i, out)),
        _ => {}
    }
}

/// The operations of a document as `METHOD path` lines, for tests and messages.
pub fn operations(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Map::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (path, item) in paths {
        if let Some(item) = item.as_object() {
            for method in item.keys() {
                out.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(dmi: bool) -> Instance {
        Instance {
            model: "m1".into(),
            version: "9.9.9".into(),
            vocab_max: 31999,
            dmi,
        }
    }

    #[test]
    fn every_document_parses_and_resolves() {
        for planes in [
            vec![Plane::Business],
            vec![Plane::Management],
            vec![Plane::Metrics],
            vec![Plane::Business, Plane::Management, Plane::Metrics],
        ] {
            for dmi in [false, true] {
                let doc = document(&planes, &inst(dmi)).expect("parses");
                assert_eq!(dangling_refs(&doc), Vec::<String>::new(), "{planes:?}");
                assert_eq!(doc["openapi"], "3.0.3");
                assert_eq!(doc["info"]["version"], "9.9.9");
                assert!(!doc.to_string().contains("{{"), "a placeholder is left");
            }
        }
    }

    #[test]
    fn a_listener_describes_only_its_routes() {
        let business = operations(&document(&[Plane::Business], &inst(false)).expect("doc"));
        assert!(business.contains(&"POST /v1/chat/completions".to_string()));
        assert!(!business.iter().any(|o| o.contains("/health")));
        let mgmt = operations(&document(&[Plane::Management], &inst(false)).expect("doc"));
        assert!(mgmt.contains(&"GET /health".to_string()));
        assert!(
            !mgmt.iter().any(|o| o.contains("/role/")),
            "no role routes outside dmi"
        );
        let dmi = operations(&document(&[Plane::Management], &inst(true)).expect("doc"));
        assert!(dmi.contains(&"POST /v1/role/prefill".to_string()));
        let both = operations(
            &document(&[Plane::Business, Plane::Management], &inst(false)).expect("doc"),
        );
        assert_eq!(both.len(), business.len() + mgmt.len());
    }

    #[test]
    fn the_model_name_is_filled_in() {
        let doc = document(&[Plane::Business], &inst(false)).expect("doc");
        assert_eq!(
            doc["components"]["parameters"]["Model"]["schema"]["enum"],
            json!(["m1"])
        );
        assert_eq!(
            doc["components"]["schemas"]["ChatRequest"]["properties"]["model"]["enum"],
            json!(["m1"])
        );
        let ids = &doc["components"]["schemas"]["NativeTokenRequest"]["properties"]["input_id"];
        assert_eq!(ids["items"]["maximum"], json!(31999));
    }
}
