//! The part of the OpenMetadata REST API that the `metadata` CLI of
//! `openmetadata-ingestion` 2.0 calls during a database metadata ingestion
//! and a test connection, served under `/api/v1/`.
//!
//! | Route | Result |
//! |---|---|
//! | `GET system/version` | `{version, revision, timestamp}` |
//! | `GET services/testConnectionDefinitions/name/{fqn}` | the steps of a connector's test connection |
//! | `PUT` or `POST {collection}` | creates or updates an entity from a create request |
//! | `GET {collection}/name/{fqn}` and `GET {collection}/{id}` | one entity |
//! | `GET {collection}?service=…&database=…&databaseSchema=…` | `{data, paging}` of matching entities |
//! | `PUT services/ingestionPipelines/{fqn}/pipelineStatus` | stores a pipeline status by `runId` |
//! | `GET services/ingestionPipelines/{fqn}/pipelineStatus/{runId}` | one status |
//! | `GET services/ingestionPipelines/{fqn}/pipelineStatus?startTs&endTs` | `{data}` of statuses |
//! | `PATCH automations/workflows/{id}` | applies `add`/`replace` on a test connection's response and status |
//!
//! The collections are `services/databaseServices`, `databases`,
//! `databaseSchemas`, `tables`, `storedProcedures` and
//! `services/ingestionPipelines`, which also take `PUT {collection}/bulk`
//! and `DELETE {collection}/deleteStale`. Every request except `GET
//! system/version` needs `Authorization: Bearer <token>` with one of the
//! runner tokens, which is the bot JWT the runner also connects with.
//! Requests outside this subset get 404 and a warning in the control plane's
//! log with the method, path, query and the top-level keys of the body
//! (never values).
//!
//! The store keeps what the CLI sends, in memory, with secret field values
//! masked. The control plane's own API lists it under `/v1/openmetadata/`.

mod fqn;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use sha2::Digest;

use super::auth;
use super::state::Shared;
use crate::protocol::PipelineStatus;
pub use store::EntityKind;
use store::{EntityStore, StoreError};

/// Version reported by `system/version`. The CLI requires the same major and
/// minor version as its own.
pub const SERVER_VERSION: &str = "2.0.0";

/// Largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Page size when a list request sets no `limit`.
const DEFAULT_LIMIT: usize = 10;

/// Test connection steps served for every connector type. Each name must be a
/// step the connector implements. `CheckAccess` stops the test when it fails.
const TEST_CONNECTION_STEPS: &[(&str, bool)] = &[
    ("CheckAccess", true),
    ("GetSchemas", true),
    ("GetTables", true),
    ("GetViews", false),
];

/// State of the OpenMetadata API subset.
#[derive(Debug, Default)]
pub(super) struct OpenMetadataState {
    store: Mutex<EntityStore>,
}

impl OpenMetadataState {
    fn store(&self) -> MutexGuard<'_, EntityStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the final state a runner reported over its session in the
    /// pipeline status of the same run, so both sources agree when the
    /// workflow process ended without reporting a final state itself.
    pub(super) fn record_runner_final(&self, pipeline_fqn: &str, status: &PipelineStatus) {
        let Ok(Value::String(state)) = serde_json::to_value(status.pipeline_state) else {
            return;
        };
        let end_date = status.end_date.unwrap_or(status.timestamp);
        let stored = self.store().finish_status(
            pipeline_fqn,
            &status.run_id,
            &state,
            status.start_date,
            end_date,
        );
        match stored {
            Some(stored) if stored != state => tracing::warn!(
                pipeline_fqn,
                run_id = %status.run_id,
                workflow_state = %stored,
                runner_state = %state,
                "the workflow and the runner reported different final states; the pipeline status keeps the workflow's"
            ),
            Some(_) => {
                tracing::debug!(pipeline_fqn, run_id = %status.run_id, %state, "pipeline status final")
            }
            None => {}
        }
    }
}

/// Builds the `/api/v1/` routes.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/{*rest}", any(handle))
        .with_state(shared)
}

/// Builds an error response in the shape the OpenMetadata server uses.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": status.as_u16(), "message": message.into() });
    (status, axum::Json(body)).into_response()
}

fn ok(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// One parsed request.
struct OmRequest {
    method: Method,
    /// Path segments after `/api/v1/`, percent-decoded.
    segments: Vec<String>,
    query: HashMap<String, String>,
    body: Bytes,
    /// `http://HOST` from the `Host` header, for the `href` of entities.
    base: String,
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.to_string())
        .unwrap_or_default();
    // The server version is public, as on OpenMetadata servers, because the
    // CLI requests it before it sends its token.
    let public =
        request.method() == Method::GET && request.uri().path() == "/api/v1/system/version";
    if !public && let Err(problem) = auth::check_bearer(request.headers(), &shared.runner_tokens) {
        tracing::warn!(
            %remote,
            method = %request.method(),
            path = %request.uri().path(),
            reason = problem.describe(),
            "rejected OpenMetadata API request"
        );
        return unauthorized();
    }
    let base = base_url(request.headers());
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(problem) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "failed to read the request body (limit {MAX_BODY_BYTES} bytes): {problem}"
                ),
            );
        }
    };
    let request = OmRequest {
        method: parts.method,
        segments: decode_segments(parts.uri.path()),
        query: parse_query(parts.uri.query().unwrap_or_default()),
        body,
        base,
    };
    let response = route(&shared.openmetadata, &request);
    match response {
        Some(response) => response,
        None => {
            tracing::warn!(
                method = %request.method,
                path = %parts.uri.path(),
                query = parts.uri.query().unwrap_or_default(),
                body = %body_shape(&request.body),
                "OpenMetadata API request not served by the reference control plane"
            );
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "{} {} is not part of the OpenMetadata API subset of the reference control plane",
                    request.method,
                    parts.uri.path()
                ),
            )
        }
    }
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "missing or invalid bot token; set workflowConfig.openMetadataServerConfig.securityConfig.jwtToken to a runner token",
    );
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Dispatches a request, or returns `None` when no route matches.
fn route(state: &OpenMetadataState, request: &OmRequest) -> Option<Response> {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let method = &request.method;
    match segments.as_slice() {
        ["system", "version"] if method == Method::GET => Some(version()),
        ["services", "testConnectionDefinitions", "name", name] if method == Method::GET => {
            Some(test_connection_definition(name))
        }
        ["services", "ingestionPipelines", fqn, "pipelineStatus"] if method == Method::PUT => {
            Some(put_status(state, fqn, &request.body))
        }
        ["services", "ingestionPipelines", fqn, "pipelineStatus"] if method == Method::GET => {
            Some(list_statuses(state, fqn, &request.query))
        }
        [
            "services",
            "ingestionPipelines",
            fqn,
            "pipelineStatus",
            run_id,
        ] if method == Method::GET => Some(get_status(state, fqn, run_id)),
        ["services", "ingestionPipelines", "progress", fqn, run_id] if method == Method::PUT => {
            Some(accept_progress(fqn, run_id))
        }
        ["automations", "workflows", id] if method == Method::PATCH => {
            Some(patch_workflow(state, id, &request.body))
        }
        _ => route_entities(state, request),
    }
}

/// Dispatches the entity routes of [`EntityKind`] collections.
fn route_entities(state: &OpenMetadataState, request: &OmRequest) -> Option<Response> {
    let segments = &request.segments;
    let method = &request.method;
    if let Some(kind) = EntityKind::from_collection(segments) {
        return match *method {
            Method::PUT | Method::POST => Some(create_or_update(state, kind, request)),
            Method::GET => Some(list(state, kind, &request.query)),
            _ => None,
        };
    }
    if method == Method::PUT && segments.last().is_some_and(|last| last == "bulk") {
        let kind = EntityKind::from_collection(&segments[..segments.len() - 1])?;
        return Some(bulk_create_or_update(state, kind, request));
    }
    if method == Method::DELETE && segments.last().is_some_and(|last| last == "deleteStale") {
        let kind = EntityKind::from_collection(&segments[..segments.len() - 1])?;
        return Some(delete_stale(state, kind, &request.body));
    }
    if method != Method::GET {
        return None;
    }
    // `{collection}/name/{fqn}`
    if segments.len() >= 3 && segments[segments.len() - 2] == "name" {
        let kind = EntityKind::from_collection(&segments[..segments.len() - 2])?;
        let fqn = &segments[segments.len() - 1];
        let found = state.store().by_name(kind, fqn).cloned();
        return Some(entity_or_404(kind, fqn, found));
    }
    // `{collection}/{id}`
    if segments.len() >= 2 {
        let kind = EntityKind::from_collection(&segments[..segments.len() - 1])?;
        let id = &segments[segments.len() - 1];
        let found = state.store().by_id(kind, id).cloned();
        return Some(entity_or_404(kind, id, found));
    }
    None
}

fn entity_or_404(kind: EntityKind, name: &str, found: Option<Value>) -> Response {
    match found {
        Some(entity) => ok(entity),
        None => error(
            StatusCode::NOT_FOUND,
            format!("{} instance for {name} not found", kind.type_name()),
        ),
    }
}

fn version() -> Response {
    ok(json!({
        "version": SERVER_VERSION,
        "revision": "hybrid-runner-reference-control-plane",
        "timestamp": crate::now_millis(),
    }))
}

/// Returns the test connection definition `<ConnectorType>.testConnectionDefinition`.
fn test_connection_definition(name: &str) -> Response {
    let Some(connector) = name.strip_suffix(".testConnectionDefinition") else {
        return error(
            StatusCode::NOT_FOUND,
            format!("testConnectionDefinition instance for {name} not found"),
        );
    };
    let steps: Vec<Value> = TEST_CONNECTION_STEPS
        .iter()
        .map(|(step, mandatory)| {
            json!({
                "name": step,
                "description": format!("{step} on the {connector} source"),
                "errorMessage": format!("{step} failed"),
                "mandatory": mandatory,
                "shortCircuit": *step == "CheckAccess",
            })
        })
        .collect();
    // A stable id per definition name, as the server keeps one record per connector.
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    ok(json!({
        "id": id,
        "name": name,
        "fullyQualifiedName": name,
        "displayName": format!("{connector} Test Connection"),
        "steps": steps,
        "version": 0.1,
        "deleted": false,
    }))
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body)
        .map_err(|problem| format!("the request body is not valid JSON: {problem}"))
}

fn store_error(problem: StoreError) -> Response {
    let status = match problem {
        StoreError::ParentNotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::Invalid(_) | StoreError::Name(_) => StatusCode::BAD_REQUEST,
    };
    error(status, problem.to_string())
}

fn create_or_update(state: &OpenMetadataState, kind: EntityKind, request: &OmRequest) -> Response {
    let body = match parse_json(&request.body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let result = state.store().create_or_update(kind, &body, &request.base);
    match result {
        Ok((entity, created)) => {
            tracing::debug!(
                kind = kind.type_name(),
                fqn = entity["fullyQualifiedName"].as_str().unwrap_or_default(),
                created,
                "OpenMetadata entity stored"
            );
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(entity)).into_response()
        }
        Err(problem) => store_error(problem),
    }
}

/// Lists entities, filtered by the parent FQN query parameters the CLI sends
/// (`service`, `database`, `databaseSchema`), one page of `limit` at a time
/// with `after` as the offset cursor.
fn list(state: &OpenMetadataState, kind: EntityKind, query: &HashMap<String, String>) -> Response {
    let filters: Vec<(&str, &str)> = ["service", "database", "databaseSchema"]
        .into_iter()
        .filter_map(|field| query.get(field).map(|fqn| (field, fqn.as_str())))
        .collect();
    let all = state.store().list(kind, &filters);
    let limit = query
        .get("limit")
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .max(1);
    let offset: usize = query
        .get("after")
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + page.len();
    let mut paging = json!({ "total": all.len() });
    if next < all.len() {
        paging["after"] = json!(next.to_string());
    }
    ok(json!({ "data": page, "paging": paging }))
}

/// Creates or updates each create request of a JSON array and returns a
/// `BulkOperationResult` whose `successRequest` and `failedRequest` name the
/// entities.
fn bulk_create_or_update(
    state: &OpenMetadataState,
    kind: EntityKind,
    request: &OmRequest,
) -> Response {
    let body = match parse_json(&request.body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(items) = body.as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON array of create requests",
        );
    };
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    let mut store = state.store();
    for item in items {
        match store.create_or_update(kind, item, &request.base) {
            Ok((entity, created)) => succeeded.push(json!({
                "request": entity["fullyQualifiedName"],
                "status": if created { 201 } else { 200 },
            })),
            Err(problem) => failed.push(json!({
                "request": item["name"],
                "message": problem.to_string(),
                "status": 400,
            })),
        }
    }
    drop(store);
    tracing::debug!(
        kind = kind.type_name(),
        stored = succeeded.len(),
        failed = failed.len(),
        "OpenMetadata bulk request"
    );
    ok(json!({
        "dryRun": false,
        "status": if failed.is_empty() { "success" } else { "failure" },
        "numberOfRowsProcessed": items.len(),
        "numberOfRowsPassed": succeeded.len(),
        "numberOfRowsFailed": failed.len(),
        "successRequest": succeeded,
        "failedRequest": failed,
    }))
}

/// Accepts a progress update of a running ingestion. This subset does not
/// keep them, because statuses carry the outcome.
fn accept_progress(fqn: &str, run_id: &str) -> Response {
    tracing::debug!(
        pipeline_fqn = fqn,
        run_id,
        "ingestion progress update received"
    );
    ok(json!({ "pipelineFqn": fqn, "runId": run_id }))
}

/// Marks deleted the entities of `kind` in the request's scope that the
/// ingestion did not see. The body is `{scopeFqn, scopeEntityType, seenFqns, recursive}`.
fn delete_stale(state: &OpenMetadataState, kind: EntityKind, body: &[u8]) -> Response {
    let body = match parse_json(body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(scope) = body["scopeFqn"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "scopeFqn is missing or not a string",
        );
    };
    let seen: Vec<&str> = body["seenFqns"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let marked = state.store().delete_stale(kind, scope, &seen);
    tracing::debug!(
        kind = kind.type_name(),
        scope,
        marked,
        "stale OpenMetadata entities marked deleted"
    );
    ok(json!({
        "dryRun": false,
        "status": "success",
        "numberOfRowsProcessed": marked,
        "numberOfRowsPassed": marked,
        "numberOfRowsFailed": 0,
    }))
}

fn put_status(state: &OpenMetadataState, fqn: &str, body: &[u8]) -> Response {
    let status = match parse_json(body) {
        Ok(status) => status,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut store = state.store();
    if store.by_name(EntityKind::IngestionPipeline, fqn).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("ingestionPipeline instance for {fqn} not found"),
        );
    }
    let run_id = status["runId"].as_str().unwrap_or_default().to_string();
    let state_name = status["pipelineState"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match store.put_status(fqn, status) {
        Ok(()) => {
            tracing::info!(pipeline_fqn = fqn, %run_id, state = %state_name, "pipeline status reported by the workflow");
            ok(json!({ "pipelineFqn": fqn, "runId": run_id }))
        }
        Err(problem) => store_error(problem),
    }
}

/// Returns the status of one run, or 204 with an empty body when the run
/// has none yet, as the OpenMetadata server does (the CLI then creates it).
fn get_status(state: &OpenMetadataState, fqn: &str, run_id: &str) -> Response {
    match state.store().status(fqn, run_id).cloned() {
        Some(status) => ok(status),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn list_statuses(
    state: &OpenMetadataState,
    fqn: &str,
    query: &HashMap<String, String>,
) -> Response {
    let bound = |name: &str| query.get(name).and_then(|text| text.parse::<i64>().ok());
    let statuses = state
        .store()
        .statuses(fqn, bound("startTs"), bound("endTs"));
    let total = statuses.len();
    ok(json!({ "data": statuses, "paging": { "total": total } }))
}

fn patch_workflow(state: &OpenMetadataState, id: &str, body: &[u8]) -> Response {
    let operations = match parse_json(body) {
        Ok(operations) => operations,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.store().patch_workflow(id, &operations) {
        Ok(workflow) => ok(workflow),
        Err(problem) => store_error(problem),
    }
}

/// Returns everything stored, for `GET /v1/openmetadata/entities`: entities
/// by type name, pipeline statuses by pipeline FQN, and automation workflows.
pub(super) fn snapshot(shared: &Shared, type_filter: Option<&str>) -> Result<Value, String> {
    let kinds: Vec<EntityKind> = match type_filter {
        None => EntityKind::ALL.to_vec(),
        Some(name) => match EntityKind::from_type_name(name) {
            Some(kind) => vec![kind],
            None => {
                let known: Vec<&str> = EntityKind::ALL.iter().map(|k| k.type_name()).collect();
                return Err(format!(
                    "unknown entity type {name:?}; use one of: {}",
                    known.join(", ")
                ));
            }
        },
    };
    let store = shared.openmetadata.store();
    let mut entities = serde_json::Map::new();
    for kind in kinds {
        entities.insert(kind.type_name().into(), json!(store.list(kind, &[])));
    }
    Ok(json!({
        "entities": entities,
        "pipelineStatuses": store.all_statuses(),
        "automationWorkflows": store.workflows(),
    }))
}

/// Returns `http://HOST` for the request's `Host` header. The control plane
/// serves this API over plain HTTP or HTTPS; `href` values use `http` with
/// the host the client used, which the CLI only parses, never follows.
fn base_url(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// Splits a raw path after `/api/v1/` into percent-decoded segments, so a
/// quoted FQN such as `svc.%22a.b%22` stays one segment.
fn decode_segments(path: &str) -> Vec<String> {
    let rest = path.strip_prefix("/api/v1/").unwrap_or_default();
    rest.split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                let text = text.replace('+', " ");
                percent_encoding::percent_decode_str(&text)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(key), decode(value))
        })
        .collect()
}

/// Describes a request body without its values: the top-level keys of an
/// object, or the length of an array.
fn body_shape(body: &[u8]) -> String {
    if body.is_empty() {
        return "empty".into();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            format!("object with keys [{}]", keys.join(", "))
        }
        Ok(Value::Array(items)) => format!("array of {} items", items.len()),
        Ok(_) => "a JSON scalar".into(),
        Err(_) => format!("{} bytes, not JSON", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decoded() {
        assert_eq!(
            decode_segments("/api/v1/tables/name/svc.db.%22a.b%22.t"),
            vec!["tables", "name", "svc.db.\"a.b\".t"]
        );
    }

    #[test]
    fn query_decoded() {
        let query = parse_query("databaseSchema=svc.db.%22a.b%22&limit=5&fields=a%2Cb");
        assert_eq!(query["databaseSchema"], "svc.db.\"a.b\"");
        assert_eq!(query["limit"], "5");
        assert_eq!(query["fields"], "a,b");
    }

    #[test]
    fn body_shape_names_keys_only() {
        let shape = body_shape(br#"{"name":"x","password":"hunter22"}"#);
        assert_eq!(shape, "object with keys [name, password]");
        assert!(!shape.contains("hunter22"));
    }
}
