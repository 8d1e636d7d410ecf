//! `runner.http.request{...}`: HTTP requests from hooks.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, Table};
use serde::Deserialize;

use super::{error_at, json_to_lua, sub_table};
use crate::hooks::HookRedactor;

/// Default and maximum time limit of one request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Response bytes kept; longer bodies are cut.
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRequest {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    timeout: Option<f64>,
}

fn default_method() -> String {
    "GET".into()
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// Registers `runner.http.request{method, url, headers, body, timeout}`. It
/// returns `{status, headers, body}` with secrets masked in the body, or
/// raises an error when the request cannot be sent.
pub(crate) fn register_http(
    lua: &Lua,
    runner: &Table,
    redactor: Option<HookRedactor>,
) -> mlua::Result<()> {
    let http = sub_table(lua, runner, "http")?;
    let request = lua.create_async_function(move |lua, request: mlua::Value| {
        let redactor = redactor.clone();
        async move {
            let request: HttpRequest = lua.from_value(request).map_err(|error| {
                error_at(
                    &lua,
                    format!("runner.http.request: invalid request: {error}"),
                )
            })?;
            let timeout = match request.timeout {
                Some(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| {
                    error_at(
                        &lua,
                        "runner.http.request: timeout must be a number of seconds >= 0",
                    )
                })?,
                None => DEFAULT_TIMEOUT,
            }
            .min(MAX_TIMEOUT);
            let response = send(&request, timeout).await.map_err(|error| {
                error_at(
                    &lua,
                    format!("runner.http.request {}: {error}", request.url),
                )
            })?;
            let body = HookRedactor::mask(&redactor, &response.body);
            let json = serde_json::json!({
                "status": response.status,
                "headers": response.headers,
                "body": body,
            });
            json_to_lua(&lua, &json)
        }
    })?;
    http.raw_set("request", request)
}

struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

async fn send(request: &HttpRequest, timeout: Duration) -> Result<HttpResponse, String> {
    let method = reqwest::Method::from_bytes(request.method.to_uppercase().as_bytes())
        .map_err(|_| format!("invalid method {:?}", request.method))?;
    let mut builder = client().request(method, &request.url).timeout(timeout);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = builder.send().await.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let bytes = response.bytes().await.map_err(|error| error.to_string())?;
    let kept = &bytes[..bytes.len().min(MAX_BODY_BYTES)];
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(kept).into_owned(),
    })
}
