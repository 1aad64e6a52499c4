//! The HTTP client for the server's API: blocking (apps call sync from a background thread),
//! with timeouts, JSON in and out, and the server's error codes kept.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use baylink_sync::wire::{
    Cursor, PAGE_STREAM, PROTOCOL_VERSION, PullRequest, PullResponse, PushRequest, PushResponse,
};
use baylink_sync::{Change, NodeId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use ureq::http::Response;
use ureq::{Body, BodyReader};

use crate::error::{Error, Result};

/// Tokens and identity the server returns at login and refresh.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionTokens {
    /// Bearer token.
    pub access_token: String,
    /// Single-use refresh token.
    pub refresh_token: String,
    /// Villages of the account.
    pub villages: Vec<String>,
    /// The account.
    pub account: AccountInfo,
    /// Server time.
    pub server_time_ms: u64,
}

/// The account as the server describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct AccountInfo {
    /// Username.
    pub username: String,
    /// Display name.
    pub display_name: String,
}

/// A connection to one server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the server at `base` (`http://127.0.0.1:8080`), with a request timeout.
    pub fn new(base: &str, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    /// Sends a request; an answer other than 2xx is [`Error::Server`] with its code and message.
    fn send(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Response<Body>> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request
            .send(body.to_string())
            .map_err(|e| Error::Network(e.to_string()))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = read_text(&mut response)?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Err(Error::Server {
            status,
            code: field("code"),
            message: field("message"),
        })
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<T> {
        let mut response = self.send(path, token, body)?;
        let text = read_text(&mut response)?;
        if response.status().as_u16() == 204 {
            return serde_json::from_str("null").map_err(|e| Error::Network(e.to_string()));
        }
        serde_json::from_str(&text).map_err(|e| Error::Network(format!("answer from {path}: {e}")))
    }

    /// Signs in and registers this device.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        device: NodeId,
        device_name: &str,
    ) -> Result<SessionTokens> {
        let body = json!({
            "username": username, "password": password,
            "device_id": device.to_string(), "device_name": device_name,
        });
        self.post("/api/v1/auth/login", None, &body)
    }

    /// Rotates the refresh token.
    pub fn refresh(&self, device: NodeId, refresh_token: &str) -> Result<SessionTokens> {
        let body = json!({ "device_id": device.to_string(), "refresh_token": refresh_token });
        self.post("/api/v1/auth/refresh", None, &body)
    }

    /// Ends the session on the server.
    pub fn logout(&self, token: &str) -> Result<()> {
        let _: Option<Value> = self.post("/api/v1/auth/logout", Some(token), &json!({}))?;
        Ok(())
    }

    /// Pushes changes.
    pub fn push(&self, token: &str, device: NodeId, changes: Vec<Change>) -> Result<PushResponse> {
        let request = PushRequest {
            protocol: PROTOCOL_VERSION,
            device,
            changes,
            extra: Default::default(),
        };
        let body = serde_json::to_value(&request).map_err(|e| Error::Network(e.to_string()))?;
        self.post("/api/v1/sync/push", Some(token), &body)
    }

    /// Pulls one page after a cursor.
    pub fn pull(&self, token: &str, cursor: Option<String>, limit: u32) -> Result<PullResponse> {
        let mut pages = self.pull_pages(token, cursor, limit, 1)?;
        pages.next().unwrap_or_else(|| {
            Err(Error::Network(
                "answer from /api/v1/sync/pull: no page".into(),
            ))
        })
    }

    /// Pulls up to `pages` consecutive pages after a cursor in one answer, each read as it
    /// arrives (a server that does not stream them answers one page).
    pub fn pull_pages(
        &self,
        token: &str,
        cursor: Option<String>,
        limit: u32,
        pages: u32,
    ) -> Result<Pages> {
        let request = PullRequest {
            protocol: PROTOCOL_VERSION,
            cursor: cursor.map(Cursor),
            limit,
            pages: (pages > 1).then_some(pages),
            extra: Default::default(),
        };
        let body = serde_json::to_value(&request).map_err(|e| Error::Network(e.to_string()))?;
        let response = self.send("/api/v1/sync/pull", Some(token), &body)?;
        let streamed = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(PAGE_STREAM.as_bytes()));
        Ok(Pages {
            body: BufReader::new(response.into_body().into_reader()),
            streamed,
            read: 0,
            done: false,
        })
    }
}

/// The pages of a pull's answer, in order, each read off the connection as it is asked for.
pub struct Pages {
    body: BufReader<BodyReader<'static>>,
    streamed: bool,
    /// Pages read so far.
    read: usize,
    done: bool,
}

impl Iterator for Pages {
    type Item = Result<PullResponse>;

    fn next(&mut self) -> Option<Result<PullResponse>> {
        if self.done {
            return None;
        }
        let mut text = Vec::new();
        let read = if self.streamed {
            self.body.read_until(b'\n', &mut text)
        } else {
            self.done = true;
            self.body.read_to_end(&mut text)
        };
        let page = match read {
            // An answer without any page is a failure (asking again at once would loop).
            Ok(0) if self.read == 0 => Some(Err(Error::Network(
                "answer from /api/v1/sync/pull: no page".into(),
            ))),
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_slice(&text)
                    .map_err(|e| Error::Network(format!("answer from /api/v1/sync/pull: {e}"))),
            ),
            Err(e) => Some(Err(Error::Network(e.to_string()))),
        };
        // A page cut short or unreadable ends the answer: what follows it is not trusted.
        self.done |= !matches!(page, Some(Ok(_)));
        self.read += 1;
        page
    }
}

/// An answer's body as text.
fn read_text(response: &mut Response<Body>) -> Result<String> {
    response
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| Error::Network(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A server on loopback that answers one request with `answer` (status line, headers and
    /// body as sent) and hangs up.
    fn answering(answer: String) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request);
            let _ = socket.write_all(answer.as_bytes());
        });
        url
    }

    #[test]
    fn a_stream_of_pages_is_read_a_line_at_a_time_and_one_without_pages_is_a_failure() {
        let page = r#"{"server_time_ms":1,"values":[],"next_cursor":"c1","more":true}"#;
        let two = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n{page}\n{}\n",
            page.len() * 2 + 2,
            page.replace("c1", "c2")
        );
        let client = Client::new(&answering(two), Duration::from_secs(5));
        let cursors: Vec<String> = client
            .pull_pages("t", None, 10, 2)
            .unwrap()
            .map(|p| p.unwrap().next_cursor.0)
            .collect();
        assert_eq!(cursors, ["c1", "c2"]);
        let none =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: 0\r\n\r\n";
        let client = Client::new(&answering(none.into()), Duration::from_secs(5));
        let mut pages = client.pull_pages("t", None, 10, 2).unwrap();
        assert!(matches!(pages.next(), Some(Err(Error::Network(_)))));
        assert!(pages.next().is_none());
    }
}
