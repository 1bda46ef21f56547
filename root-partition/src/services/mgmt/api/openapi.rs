//! A small checker of requests and answers against the API's OpenAPI 3.1
//! document (`docs/openapi.json`), for the tests of the API, `capctl` and
//! the QEMU cases (through the `testkit` feature). It finds the operation
//! of a method and a concrete path, and checks a body against its schema:
//! `$ref`, `type` (and type lists, for `null`), `properties`, `required`,
//! `additionalProperties: false`, `enum`, `items`, `minimum`, `maximum`,
//! `maxItems`, `pattern` of the form `^[set]{n}$`. Written here because the
//! JSON-schema crates need std (`docs/crates.md`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use super::routes::match_template;

/// The repository's document.
pub const DOCUMENT: &str = include_str!("../../../../../docs/openapi.json");

/// A parsed OpenAPI document.
#[derive(Clone, Debug)]
pub struct OpenApi {
    doc: Value,
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

impl OpenApi {
    /// The repository's document ([`DOCUMENT`]).
    pub fn document() -> Result<OpenApi, String> {
        OpenApi::parse(DOCUMENT)
    }

    /// A document from its text.
    pub fn parse(text: &str) -> Result<OpenApi, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if !doc.get("paths").is_some_and(Value::is_object) {
            return Err("no paths".to_string());
        }
        Ok(OpenApi { doc })
    }

    /// Every path template with its methods (upper case).
    pub fn operations(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (path, item) in paths {
                let methods = METHODS
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| m.to_ascii_uppercase())
                    .collect();
                out.push((path.clone(), methods));
            }
        }
        out
    }

    /// The operation for `method` on the concrete `path`: its template and
    /// its object.
    pub fn operation(&self, method: &str, path: &str) -> Result<(String, &Value), String> {
        let paths = self.doc["paths"].as_object().ok_or("no paths")?;
        // Templates without parameters first: `/vms/x` before `/vms/{name}`.
        let mut templates: Vec<&String> = paths.keys().collect();
        templates.sort_by_key(|t| t.matches('{').count());
        let template = templates
            .into_iter()
            .find(|t| match_template(t, path).is_some())
            .ok_or_else(|| format!("{path}: not in the document"))?;
        let op = paths[template]
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("{method} {template}: not in the document"))?;
        Ok((template.clone(), op))
    }

    /// Follows `$ref`s (`#/a/b`) until a value without one.
    fn resolve<'a>(&'a self, mut v: &'a Value) -> Result<&'a Value, String> {
        for _ in 0..16 {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return Ok(v);
            };
            let pointer = r
                .strip_prefix('#')
                .ok_or_else(|| format!("{r}: only local references"))?;
            v = self
                .doc
                .pointer(pointer)
                .ok_or_else(|| format!("{r}: no such part of the document"))?;
        }
        Err("references nested too deep".to_string())
    }

    /// Checks a request's body against its operation's `requestBody`.
    pub fn check_request(&self, method: &str, path: &str, body: &[u8]) -> Result<(), String> {
        let (template, op) = self.operation(method, path)?;
        let Some(rb) = op.get("requestBody") else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!("{method} {template} takes no body"))
            };
        };
        let schema = self.resolve(rb)?["content"]["application/json"]
            .get("schema")
            .ok_or_else(|| format!("{method} {template}: no JSON request schema"))?;
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("request body is not JSON: {e}"))?;
        self.check(schema, &value, "body")
    }

    /// Checks an answer: its status must be documented for the operation,
    /// and its body must match that status's schema (`content_type` says
    /// which; a status without content has an empty body).
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let (template, op) = self.operation(method, path)?;
        let response = op["responses"]
            .get(status.to_string())
            .ok_or_else(|| format!("{method} {template}: status {status} is not documented"))?;
        let response = self.resolve(response)?;
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{method} {template} {status}: a body where none is documented"
                ))
            };
        };
        let media = content.get(content_type).ok_or_else(|| {
            format!("{method} {template} {status}: content type {content_type} is not documented")
        })?;
        if content_type != "application/json" {
            return Ok(());
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
        self.check(&media["schema"], &value, "body")
    }

    /// Checks any answer, also to a path or method the document does not
    /// have: those must be refusals (401, or 404 for an unknown path, 405
    /// for a known path's unknown method) with the `Error` body.
    pub fn check_answer(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let undocumented = match self.operation(method, path) {
            Ok(_) => return self.check_response(method, path, status, content_type, body),
            Err(e) => e,
        };
        let path_known = METHODS.iter().any(|m| self.operation(m, path).is_ok());
        let allowed = match status {
            401 => true,
            404 => !path_known,
            405 => path_known,
            _ => false,
        };
        if !allowed || content_type != "application/json" {
            return Err(format!(
                "{undocumented}, and {status} is not a refusal of it"
            ));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
        self.check(&json_ref("Error"), &value, "body")
    }

    /// Checks `value` (at `at`, for messages) against `schema`.
    pub fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => alloc::vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type in the schema")),
            };
            let actual = type_of(value);
            let fits = allowed
                .iter()
                .any(|t| *t == actual || (*t == "number" && actual == "integer"));
            if !fits {
                return Err(format!("{at}: {actual}, expected {}", allowed.join(" or ")));
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return Err(format!(
                "{at}: {value} is not one of {}",
                Value::from(options.clone())
            ));
        }
        match value {
            Value::Object(object) => self.check_object(schema, object, at)?,
            Value::Array(items) => {
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && items.len() as u64 > max
                {
                    return Err(format!("{at}: {} items, at most {max}", items.len()));
                }
                if let Some(item) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.check(item, v, &format!("{at}[{i}]"))?;
                    }
                }
            }
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && (n < min || n.is_nan())
                {
                    return Err(format!("{at}: {n} is below {min}"));
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && (n > max || n.is_nan())
                {
                    return Err(format!("{at}: {n} is above {max}"));
                }
            }
            Value::String(s) => {
                if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                    check_pattern(p, s).map_err(|e| format!("{at}: {e}"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Value,
        object: &Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{at}: missing required field `{name}`"));
                }
            }
        }
        for (key, v) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(s) => self.check(s, v, &format!("{at}.{key}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: field `{key}` is not in the schema"));
                }
                None => {}
            }
        }
        Ok(())
    }
}

fn json_ref(name: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "$ref".into(),
        Value::from(format!("#/components/schemas/{name}")),
    );
    Value::Object(m)
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The only patterns the document uses: `^[SET]{N}$`, SET of ranges.
fn check_pattern(pattern: &str, s: &str) -> Result<(), String> {
    let unsupported = || format!("pattern {pattern} is not supported by this checker");
    let inner = pattern
        .strip_prefix("^[")
        .and_then(|p| p.strip_suffix('$'))
        .ok_or_else(unsupported)?;
    let (set, count) = inner.split_once("]{").ok_or_else(unsupported)?;
    let count: usize = count
        .strip_suffix('}')
        .and_then(|c| c.parse().ok())
        .ok_or_else(unsupported)?;
    let set = set.as_bytes();
    let in_set = |c: u8| {
        set.chunks(3)
            .any(|r| r.len() == 3 && r[1] == b'-' && (r[0]..=r[2]).contains(&c))
    };
    if s.len() == count && s.bytes().all(in_set) {
        Ok(())
    } else {
        Err(format!("{s:?} does not match {pattern}"))
    }
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
