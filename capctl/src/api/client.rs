//! The HTTP client of the management API: `ureq` (blocking, keep-alive,
//! timeouts) with the bearer token on every request, and the node's
//! answers turned into values or into one clear [`Failure`].
//!
//! Invariant: the token goes only into the `Authorization` header; a 401
//! names where the token came from, never the token.

use super::token::{self, Token};
use super::{Failure, Global};
use anyhow::Result;
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;
use ureq::Agent;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request and its answer may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer read (the node's own bodies are far smaller).
const MAX_ANSWER: u64 = 4 << 20;

/// The methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

/// A successful answer: its status and its JSON body (`null` if empty).
#[derive(Debug)]
pub struct Answer {
    /// 200, 201, 202 or 204.
    pub status: u16,
    /// The body.
    pub body: Value,
}

/// A connection to one node's management API.
pub struct Client {
    agent: Agent,
    node: String,
    base: String,
    token: Token,
}

/// `HOST:PORT` (an `http://` prefix and a trailing `/` are accepted).
fn normalize(node: &str) -> Result<String> {
    let addr = node.strip_prefix("http://").unwrap_or(node);
    let addr = addr.trim_end_matches('/');
    if addr.is_empty() || addr.contains('/') || addr.contains("://") {
        anyhow::bail!(
            "--node {node}: not HOST:PORT (e.g. {})",
            super::DEFAULT_NODE
        );
    }
    Ok(addr.to_owned())
}

impl Client {
    /// A client for the node and token of the global options.
    pub fn new(global: &Global) -> Result<Client> {
        Client::with_timeout(global, Some(CALL_TIMEOUT))
    }

    /// The same with another limit on each call (`None`: none, for an
    /// event stream).
    pub fn with_timeout(global: &Global, timeout: Option<Duration>) -> Result<Client> {
        let node = normalize(&global.node)?;
        let token = token::load(global)?;
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(timeout)
            .user_agent(format!("capctl/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client {
            agent,
            base: format!("http://{node}/api/v1"),
            node,
            token,
        })
    }

    /// The node's address (`HOST:PORT`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sends one request (`path` under `/api/v1`) and returns the answer,
    /// or the [`Failure`] that says why not. `what` names the object for
    /// a 404 (e.g. "VM kv").
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer> {
        let (status, text) = self.exchange(method, path, body)?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) if (200..300).contains(&status) => {
                    return Err(Failure::new(
                        "bad_answer",
                        format!(
                            "the node at {} answered {status} with a body that is not JSON",
                            self.node
                        ),
                    )
                    .into());
                }
                Err(_) => json!({ "error": { "code": "http", "message": text.trim() } }),
            }
        };
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                body: value,
            });
        }
        Err(self.refusal(status, value, what).into())
    }

    /// GET `path`: its JSON body.
    pub fn get(&self, path: &str, what: &str) -> Result<Value> {
        Ok(self.call(Method::Get, path, None, what)?.body)
    }

    fn exchange(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.value);
        let bytes = body.map(|b| b.to_string().into_bytes());
        let result = match (method, &bytes) {
            (Method::Get, _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (Method::Delete, _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (Method::Post, None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            (Method::Post, Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(&b[..]),
            (Method::Put, None) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_empty(),
            (Method::Put, Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(&b[..]),
        };
        let mut response = result.map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut text)
            .map_err(|e| {
                Failure::new(
                    "unreachable",
                    format!("the answer from the node at {} broke off: {e}", self.node),
                )
            })?;
        Ok((status, text))
    }

    /// Opens the event stream after `since`: the body's reader.
    pub fn events(&self, since: u64) -> Result<impl Read + use<>> {
        let url = format!("{}/events?since={since}", self.base);
        let auth = format!("Bearer {}", self.token.value);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &auth)
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let mut text = String::new();
            let _ = response
                .body_mut()
                .as_reader()
                .take(MAX_ANSWER)
                .read_to_string(&mut text);
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(self.refusal(status, value, "event stream").into());
        }
        Ok(response.into_body().into_reader())
    }

    /// The failure for a request that got no answer.
    pub fn unreachable(&self, e: &ureq::Error) -> Failure {
        let detail = match e {
            ureq::Error::Io(io) => io.to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            other => other.to_string(),
        };
        Failure::new(
            "unreachable",
            format!(
                "cannot reach the node at {}: {detail} (is the node running, and its \
                 management port 7100 forwarded to this address? see --node / CAPVISOR_NODE)",
                self.node
            ),
        )
    }

    /// The failure for an error answer: the node's message, put in context.
    fn refusal(&self, status: u16, body: Value, what: &str) -> Failure {
        let error = body.get("error");
        let code = error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let node = &self.node;
        let text = match status {
            401 => format!(
                "the node at {node} refused the API token from {} (401 unauthorized: {}); \
                 make a new one with `capctl node token --volume IMG` while the node is down",
                self.token.source,
                if message.is_empty() {
                    "no message"
                } else {
                    &message
                }
            ),
            404 => format!(
                "no such {what} on the node at {node} (404: {})",
                if message.is_empty() {
                    "not found"
                } else {
                    &message
                }
            ),
            409 => {
                let state = error.and_then(|e| e.get("state")).and_then(Value::as_str);
                match state {
                    Some(state) if !message.contains(state) => {
                        format!("{what}: {message} (state {state}; 409 {code})")
                    }
                    _ => format!("{what}: {message} (409 {code})"),
                }
            }
            _ if message.is_empty() => format!("the node at {node} answered {status} for {what}"),
            _ => format!("{message} ({status} {code})"),
        };
        let json = if body.get("error").is_some() {
            body
        } else {
            json!({ "error": { "code": "http", "message": text } })
        };
        Failure {
            message: text,
            json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn node_addresses() {
        assert_eq!(normalize("127.0.0.1:7100").expect("ok"), "127.0.0.1:7100");
        assert_eq!(normalize("http://h:1/").expect("ok"), "h:1");
        assert!(normalize("https://h:1").is_err());
        assert!(normalize("h:1/api").is_err());
        assert!(normalize("").is_err());
    }
}
