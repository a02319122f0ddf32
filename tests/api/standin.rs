//! A stand-in for Telegram's Bot API on a loopback port: getMe, getUpdates (a long poll over a
//! queue the test fills), sendMessage, deleteMessage, setMyCommands, setWebhook and
//! deleteWebhook. It records every call for assertions and can be told to answer the next
//! call of a method with a 429 (`retry_after`) or a 500.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

pub const TOKEN: &str = "123456:stand-in-token";
pub const BOT_ID: u64 = 1000;

const METHODS: [&str; 7] = [
    "getMe",
    "getUpdates",
    "sendMessage",
    "deleteMessage",
    "setMyCommands",
    "setWebhook",
    "deleteWebhook",
];

/// A failure the stand-in answers instead of the real thing.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 429 Too Many Requests with `parameters.retry_after`.
    RetryAfter(u32),
    /// 500 Internal Server Error.
    ServerError,
}

/// One recorded Bot API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// What the stand-in answered: 200, or the fault's code.
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    /// Updates not yet confirmed by an offset past them.
    updates: VecDeque<Value>,
    next_update_id: u64,
    next_message_id: i64,
    calls: Vec<Call>,
    faults: HashMap<String, VecDeque<Fault>>,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    new_update: Arc<Notify>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    shared: Shared,
    server: JoinHandle<()>,
}

impl StandIn {
    pub async fn start() -> StandIn {
        let shared = Shared::default();
        shared.inner.lock().unwrap().next_update_id = 1;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(api).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        StandIn {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a text message from `user` in `chat` (a private chat when they are equal, a
    /// group otherwise) for getUpdates; returns the update.
    pub fn message(&self, chat: i64, user: u64, text: &str) -> Value {
        let mut inner = self.shared.inner.lock().unwrap();
        let update = update_json(&mut inner, chat, user, text);
        inner.updates.push_back(update.clone());
        drop(inner);
        self.shared.new_update.notify_waiters();
        update
    }

    /// A text message update as [`StandIn::message`] builds it, without queueing it: for
    /// webhook tests, which post it themselves.
    pub fn webhook_update(&self, chat: i64, user: u64, text: &str) -> Value {
        update_json(&mut self.shared.inner.lock().unwrap(), chat, user, text)
    }

    /// Answers the next calls of `method` with `faults`, in order.
    pub fn fail(&self, method: &str, faults: &[Fault]) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .faults
            .entry(method.into())
            .or_default()
            .extend(faults);
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The texts sent (answered 200) to `chat`, in order.
    pub fn sent_to(&self, chat: i64) -> Vec<String> {
        self.calls("sendMessage")
            .into_iter()
            .filter(|c| c.status == 200 && c.body["chat_id"] == json!(chat))
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits (up to 60 s: teloxide sleeps 10 s after each 5xx) until `chat` got `n` replies,
    /// and returns them.
    pub async fn wait_for_replies(&self, chat: i64, n: usize) -> Vec<String> {
        self.wait_for(|s| {
            let sent = s.sent_to(chat);
            (sent.len() >= n).then_some(sent)
        })
        .await
    }

    /// Waits (up to 60 s) until `check` gives a value.
    pub async fn wait_for<T>(&self, check: impl Fn(&StandIn) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "the stand-in never saw what the test waits for; calls: {:#?}",
                self.shared.inner.lock().unwrap().calls
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Updates still waiting for confirmation.
    pub fn unconfirmed(&self) -> usize {
        self.shared.inner.lock().unwrap().updates.len()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn update_json(inner: &mut Inner, chat: i64, user: u64, text: &str) -> Value {
    let update_id = inner.next_update_id;
    inner.next_update_id += 1;
    inner.next_message_id += 1;
    let chat_json = if chat == user as i64 {
        json!({"id": chat, "type": "private", "first_name": "Ana"})
    } else {
        json!({"id": chat, "type": "group", "title": "Equipe"})
    };
    json!({
        "update_id": update_id,
        "message": {
            "message_id": inner.next_message_id,
            "date": 1_700_000_000,
            "chat": chat_json,
            "from": {"id": user, "is_bot": false, "first_name": "Ana"},
            "text": text,
        }
    })
}

/// Every Bot API method: `/bot<token>/<method>`.
async fn api(State(shared): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Reply {
    let path = uri.path().trim_start_matches('/');
    let Some((token, method)) = path
        .strip_prefix("bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error(StatusCode::NOT_FOUND, "Not Found", None);
    };
    if token != TOKEN {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", None);
    }
    // Method names are case-insensitive (teloxide sends `GetMe`); record the documented spelling.
    let Some(method) = METHODS.iter().find(|m| m.eq_ignore_ascii_case(method)) else {
        return error(StatusCode::NOT_FOUND, "Not Found: method not found", None);
    };
    let method = *method;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body = match content_type.split_once("boundary=") {
        // teloxide sends setWebhook as a form (it may carry a certificate file).
        Some((_, boundary)) => form_fields(&String::from_utf8_lossy(&body), boundary),
        None => serde_json::from_slice(&body).unwrap_or(json!({})),
    };
    let fault = {
        let mut inner = shared.inner.lock().unwrap();
        let fault = inner.faults.get_mut(method).and_then(VecDeque::pop_front);
        let status = match fault {
            None => 200,
            Some(Fault::RetryAfter(_)) => 429,
            Some(Fault::ServerError) => 500,
        };
        inner.calls.push(Call {
            method: method.into(),
            body: body.clone(),
            status,
            at: Instant::now(),
        });
        fault
    };
    match fault {
        Some(Fault::RetryAfter(after)) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too Many Requests: retry after {after}"),
                Some(json!({"retry_after": after})),
            );
        }
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                None,
            );
        }
        None => {}
    }
    let result = match method {
        "getMe" => json!({
            "id": BOT_ID, "is_bot": true, "first_name": "produto", "username": "produto_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        }),
        "getUpdates" => get_updates(&shared, &body).await,
        "sendMessage" => {
            let mut inner = shared.inner.lock().unwrap();
            inner.next_message_id += 1;
            json!({
                "message_id": inner.next_message_id,
                "date": 1_700_000_000,
                "chat": {"id": body["chat_id"], "type": "private", "first_name": "Ana"},
                "from": {"id": BOT_ID, "is_bot": true, "first_name": "produto"},
                "text": body["text"],
            })
        }
        _ => json!(true),
    };
    reply(StatusCode::OK, &json!({"ok": true, "result": result}))
}

/// The text fields of a multipart/form-data body, as a JSON object of strings.
fn form_fields(body: &str, boundary: &str) -> Value {
    let mut fields = serde_json::Map::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        fields.insert(name.to_owned(), json!(value.trim_end_matches("\r\n")));
    }
    Value::Object(fields)
}

/// Drops the updates the offset confirms, then answers the rest, waiting up to the request's
/// timeout for one to arrive.
async fn get_updates(shared: &Shared, body: &Value) -> Value {
    let offset = body["offset"].as_u64().unwrap_or(0);
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = shared.new_update.notified();
        {
            let mut inner = shared.inner.lock().unwrap();
            inner
                .updates
                .retain(|u| u["update_id"].as_u64().unwrap() >= offset);
            if !inner.updates.is_empty() {
                return Value::Array(inner.updates.iter().cloned().collect());
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return json!([]);
        }
    }
}

fn error(status: StatusCode, description: &str, parameters: Option<Value>) -> Reply {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(parameters) = parameters {
        body["parameters"] = parameters;
    }
    reply(status, &body)
}

/// A Bot API answer: a status and a JSON body.
type Reply = (StatusCode, [(header::HeaderName, &'static str); 1], String);

fn reply(status: StatusCode, body: &Value) -> Reply {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
