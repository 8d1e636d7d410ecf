//! JSON HTTP API under `/v1/`.
//!
//! | Route | Result |
//! |---|---|
//! | `GET /v1/runners` | runners with status, capacity, active runs and heartbeat times |
//! | `POST /v1/runners/{agentId}/drain` | sends `runner.drain`, body `{reason?}` or empty |
//! | `POST /v1/runners/{agentId}/reload` | sends `runner.reload` |
//! | `POST /v1/runners/{agentId}/messages` | sends `message`, body `{name, body}` |
//! | `POST /v1/runners/{agentId}/frames` | sends body `{frame, runId?}` as is, for protocol tests |
//! | `POST /v1/runs` | sends `run.request` and returns `202 {runId}` |
//! | `GET /v1/runs` | run summaries in submission order |
//! | `GET /v1/runs/{runId}` | run document with statuses and final outcome |
//! | `GET /v1/runs/{runId}/logs?after=N` | log lines with `n > N`, ordered by `n` |
//! | `GET /v1/runs/{runId}/wait?timeoutMs=N` | run document once final or after N ms |
//! | `POST /v1/runs/{runId}/cancel` | sends `run.cancel`, body `{reason?}` or empty |
//! | `GET /v1/openmetadata/entities?type=T` | entities, pipeline statuses and test connection results sent to `/api/v1/` |
//!
//! Every error response has the body `{"error": "<sentence>"}`. When an API
//! token is configured, every matched `/v1/` route requires
//! `Authorization: Bearer <api token>`. Without one, the API is open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::auth;
use super::state::Shared;
use super::{ControlPlaneError, RunSubmission};

/// Wait time of `GET /v1/runs/{runId}/wait` when `timeoutMs` is absent.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Longest accepted `timeoutMs` of the wait endpoint: 10 minutes.
const MAX_WAIT_MS: u64 = 600_000;

/// Largest body of `POST /v1/runners/{agentId}/frames`, which tests use to
/// send oversized run requests; other routes keep axum's 2 MB default.
const MAX_FRAME_BODY_BYTES: usize = 256 << 20;

/// A JSON error response.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: String) -> Self {
        ApiError { status, message }
    }

    fn bad_request(message: String) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ControlPlaneError> for ApiError {
    fn from(error: ControlPlaneError) -> Self {
        let status = match &error {
            ControlPlaneError::InvalidSubmission(_) => StatusCode::BAD_REQUEST,
            ControlPlaneError::RunNotFound { .. } => StatusCode::NOT_FOUND,
            ControlPlaneError::RunnerNotConnected { .. }
            | ControlPlaneError::DuplicateRun { .. }
            | ControlPlaneError::RunFinished { .. } => StatusCode::CONFLICT,
            ControlPlaneError::Bind { .. }
            | ControlPlaneError::InvalidOption { .. }
            | ControlPlaneError::Tls { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

/// Builds a 401 JSON error response with `WWW-Authenticate: Bearer`.
pub(super) fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message.to_string()).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

type ApiResult = Result<Response, ApiError>;

/// Extractor results that handlers turn into JSON errors themselves, so that
/// no rejection returns axum's plain-text body.
type PathParam = Result<Path<String>, PathRejection>;
type Body = Result<Bytes, BytesRejection>;
type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Builds the `/v1/` routes.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/runners", get(list_runners))
        .route("/v1/runners/{agent_id}/drain", post(drain_runner))
        .route("/v1/runners/{agent_id}/reload", post(reload_runner))
        .route("/v1/runners/{agent_id}/messages", post(send_message))
        .route(
            "/v1/runners/{agent_id}/frames",
            post(send_frame).layer(axum::extract::DefaultBodyLimit::max(MAX_FRAME_BODY_BYTES)),
        )
        .route("/v1/runs", get(list_runs).post(submit_run))
        .route("/v1/runs/{run_id}", get(get_run))
        .route("/v1/runs/{run_id}/logs", get(get_logs))
        .route("/v1/runs/{run_id}/wait", get(wait_for_run))
        .route("/v1/runs/{run_id}/cancel", post(cancel_run))
        .route("/v1/openmetadata/entities", get(openmetadata_entities))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_api_token,
        ))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

async fn require_api_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &shared.api_token else {
        return next.run(request).await;
    };
    match auth::check_bearer(request.headers(), std::slice::from_ref(token)) {
        Ok(()) => next.run(request).await,
        Err(problem) => {
            let remote = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.to_string())
                .unwrap_or_default();
            tracing::warn!(
                %remote,
                method = %request.method(),
                path = %request.uri().path(),
                reason = problem.describe(),
                "rejected API request"
            );
            unauthorized("missing or invalid API token; send Authorization: Bearer <api token>")
        }
    }
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {} {}; the API lives under /v1/ (runners, runs)",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn list_runners(State(shared): State<Arc<Shared>>) -> Response {
    let runners = shared.store().runner_views(shared.stale_after());
    Json(runners).into_response()
}

async fn submit_run(State(shared): State<Arc<Shared>>, body: Body) -> ApiResult {
    let body = body_bytes(body)?;
    let body = parse_body(
        &body,
        "a JSON object with agentId, pipelineFqn, pipelineType and config",
    )?;
    let submission = RunSubmission::from_json(&body)?;
    let run_id = shared.submit(submission)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "runId": run_id }))).into_response())
}

async fn list_runs(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.store().run_summaries()).into_response()
}

async fn get_run(State(shared): State<Arc<Shared>>, run_id: PathParam) -> ApiResult {
    let run_id = path_param(run_id)?;
    let document = shared.store().run_document(&run_id);
    let document = document.ok_or(ControlPlaneError::RunNotFound { run_id })?;
    Ok(Json(document).into_response())
}

async fn get_logs(
    State(shared): State<Arc<Shared>>,
    run_id: PathParam,
    query: QueryParams,
) -> ApiResult {
    let run_id = path_param(run_id)?;
    let query = query_map(query)?;
    let after = query_u64(&query, "after")?.unwrap_or(0);
    let lines = shared.store().log_lines(&run_id, after);
    let lines = lines.ok_or_else(|| ControlPlaneError::RunNotFound {
        run_id: run_id.clone(),
    })?;
    Ok(Json(json!({ "runId": run_id, "lines": lines })).into_response())
}

/// Returns the run document once the run is final, or when `timeoutMs` passes
/// or the server shuts down. The document's `final` field is true only in the first case.
async fn wait_for_run(
    State(shared): State<Arc<Shared>>,
    run_id: PathParam,
    query: QueryParams,
) -> ApiResult {
    let run_id = path_param(run_id)?;
    let query = query_map(query)?;
    let wait = match query_u64(&query, "timeoutMs")? {
        Some(ms) if ms > MAX_WAIT_MS => {
            return Err(ApiError::bad_request(format!(
                "timeoutMs {ms} is too large; use at most {MAX_WAIT_MS} and wait again if needed"
            )));
        }
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_WAIT,
    };
    let signal = shared.store().final_signal(&run_id);
    let mut signal = signal.ok_or_else(|| ControlPlaneError::RunNotFound {
        run_id: run_id.clone(),
    })?;
    tokio::select! {
        // An error means the run's record is gone, which the document lookup below reports.
        _ = tokio::time::timeout(wait, signal.wait_for(|is_final| *is_final)) => {}
        () = shared.shutdown.cancelled() => {}
    }
    let document = shared.store().run_document(&run_id);
    let document = document.ok_or(ControlPlaneError::RunNotFound { run_id })?;
    Ok(Json(document).into_response())
}

async fn cancel_run(State(shared): State<Arc<Shared>>, run_id: PathParam, body: Body) -> ApiResult {
    let run_id = path_param(run_id)?;
    let body = body_bytes(body)?;
    let reason = optional_reason(&body)?;
    shared.cancel_run(&run_id, reason)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "runId": run_id }))).into_response())
}

/// Returns what workflows stored through the OpenMetadata API subset,
/// optionally only the entities of one type (`?type=table`).
async fn openmetadata_entities(State(shared): State<Arc<Shared>>, query: QueryParams) -> ApiResult {
    let query = query_map(query)?;
    let snapshot = super::openmetadata::snapshot(&shared, query.get("type").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(Json(snapshot).into_response())
}

async fn drain_runner(
    State(shared): State<Arc<Shared>>,
    agent_id: PathParam,
    body: Body,
) -> ApiResult {
    let agent_id = path_param(agent_id)?;
    let body = body_bytes(body)?;
    let reason = optional_reason(&body)?;
    shared.drain_runner(&agent_id, reason)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "agentId": agent_id }))).into_response())
}

async fn reload_runner(State(shared): State<Arc<Shared>>, agent_id: PathParam) -> ApiResult {
    let agent_id = path_param(agent_id)?;
    shared.reload_runner(&agent_id)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "agentId": agent_id }))).into_response())
}

async fn send_message(
    State(shared): State<Arc<Shared>>,
    agent_id: PathParam,
    body: Body,
) -> ApiResult {
    let agent_id = path_param(agent_id)?;
    let body = body_bytes(body)?;
    let body = parse_body(&body, "a JSON object with name and body")?;
    let name = match body.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::bad_request(
                "name is empty; set the message name".to_string(),
            ));
        }
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "name is missing; set it to the message name".to_string(),
            ));
        }
        Some(_) => return Err(ApiError::bad_request("name must be a string".to_string())),
    };
    let message_body = body.get("body").cloned().unwrap_or(Value::Null);
    shared.send_message(&agent_id, name, message_body)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "agentId": agent_id }))).into_response())
}

/// Parses a request body that must be a JSON object. Error messages describe
/// the expected body with `expected`.
fn parse_body(body: &[u8], expected: &str) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "the request body is empty; send {expected}"
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON ({error}); send {expected}"
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be {expected}"
        )));
    }
    Ok(value)
}

/// Reads the optional `{reason}` body of cancel and drain, which may also be empty.
fn optional_reason(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body = parse_body(
        body,
        "an empty body or a JSON object with an optional reason",
    )?;
    match body.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(reason)) => Ok(Some(reason.clone())),
        Some(_) => Err(ApiError::bad_request("reason must be a string".to_string())),
    }
}

fn path_param(param: PathParam) -> Result<String, ApiError> {
    param.map(|Path(value)| value).map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("invalid path: {}", rejection.body_text()),
        )
    })
}

async fn send_frame(
    State(shared): State<Arc<Shared>>,
    agent_id: PathParam,
    body: Body,
) -> ApiResult {
    let agent_id = path_param(agent_id)?;
    let body = body_bytes(body)?;
    let body = parse_body(&body, "a JSON object with frame and an optional runId")?;
    let Some(frame) = body.get("frame").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "frame is missing; set it to the text of the frame to send".to_string(),
        ));
    };
    let run_id = match body.get("runId") {
        None | Some(Value::Null) => None,
        Some(Value::String(run_id)) => Some(run_id.as_str()),
        Some(_) => return Err(ApiError::bad_request("runId must be a string".to_string())),
    };
    shared.send_raw_frame(&agent_id, run_id, frame.to_string())?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "agentId": agent_id }))).into_response())
}

fn body_bytes(body: Body) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let message = format!("failed to read the request body: {}", rejection.body_text());
        ApiError::new(rejection.status(), message)
    })
}

fn query_map(query: QueryParams) -> Result<HashMap<String, String>, ApiError> {
    query.map(|Query(map)| map).map_err(|rejection| {
        ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
    })
}

fn query_u64(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(text) = query.get(name) else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "query parameter {name}={text:?} is invalid; use a whole number of at least 0"
        ))
    })
}
