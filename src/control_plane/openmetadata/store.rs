//! In-memory OpenMetadata entities, pipeline statuses and automation workflows.
//!
//! Entities are stored as the JSON documents the API returns, keyed by kind
//! and FQN, with an index by id. Values of secret fields (such as a
//! `password` in a service connection) are replaced by a mask before
//! anything is stored.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::fqn::{self, FqnError};

/// Text stored in place of a secret field value.
pub const MASK: &str = "******";

/// Pipeline states after which a run does not change any more.
const FINAL_STATES: &[&str] = &["success", "failed", "partialSuccess", "stopped"];

/// User name recorded as `updatedBy`.
const UPDATED_BY: &str = "ingestion-bot";

/// The entity types this API subset stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    DatabaseService,
    Database,
    DatabaseSchema,
    Table,
    StoredProcedure,
    IngestionPipeline,
}

impl EntityKind {
    pub const ALL: [EntityKind; 6] = [
        EntityKind::DatabaseService,
        EntityKind::Database,
        EntityKind::DatabaseSchema,
        EntityKind::Table,
        EntityKind::StoredProcedure,
        EntityKind::IngestionPipeline,
    ];

    /// Returns the collection path under `/api/v1/`.
    pub fn collection(self) -> &'static str {
        match self {
            EntityKind::DatabaseService => "services/databaseServices",
            EntityKind::Database => "databases",
            EntityKind::DatabaseSchema => "databaseSchemas",
            EntityKind::Table => "tables",
            EntityKind::StoredProcedure => "storedProcedures",
            EntityKind::IngestionPipeline => "services/ingestionPipelines",
        }
    }

    /// Returns the entity type name used in entity references.
    pub fn type_name(self) -> &'static str {
        match self {
            EntityKind::DatabaseService => "databaseService",
            EntityKind::Database => "database",
            EntityKind::DatabaseSchema => "databaseSchema",
            EntityKind::Table => "table",
            EntityKind::StoredProcedure => "storedProcedure",
            EntityKind::IngestionPipeline => "ingestionPipeline",
        }
    }

    /// Finds the kind whose type name is `name`.
    pub fn from_type_name(name: &str) -> Option<EntityKind> {
        EntityKind::ALL
            .into_iter()
            .find(|kind| kind.type_name() == name)
    }

    /// Finds the kind whose collection path is `segments`.
    pub fn from_collection(segments: &[String]) -> Option<EntityKind> {
        let path = segments.join("/");
        EntityKind::ALL
            .into_iter()
            .find(|kind| kind.collection() == path)
    }

    /// Returns the field of a create request that names the parent entity
    /// and the parent's kind.
    fn parent(self) -> Option<(&'static str, EntityKind)> {
        match self {
            EntityKind::DatabaseService => None,
            EntityKind::Database => Some(("service", EntityKind::DatabaseService)),
            EntityKind::DatabaseSchema => Some(("database", EntityKind::Database)),
            EntityKind::Table | EntityKind::StoredProcedure => {
                Some(("databaseSchema", EntityKind::DatabaseSchema))
            }
            EntityKind::IngestionPipeline => Some(("service", EntityKind::DatabaseService)),
        }
    }
}

/// Reason a request cannot be applied to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{kind} {reference:?} not found; create it first")]
    ParentNotFound {
        kind: &'static str,
        reference: String,
    },
    #[error("invalid name: {0}")]
    Name(#[from] FqnError),
}

/// Entities, pipeline statuses and automation workflows of one control plane.
#[derive(Debug, Default)]
pub struct EntityStore {
    entities: BTreeMap<(EntityKind, String), Value>,
    ids: HashMap<String, (EntityKind, String)>,
    /// Statuses per ingestion pipeline FQN, in the order of their first report.
    statuses: BTreeMap<String, Vec<Value>>,
    /// Automation workflows (such as test connections) by id.
    workflows: BTreeMap<String, Value>,
}

impl EntityStore {
    /// Creates the entity of a create request, or updates the entity with the same FQN.
    /// Returns the stored document and whether it is new.
    /// `base` is the server's URL, such as `http://127.0.0.1:8585`, for `href`.
    pub fn create_or_update(
        &mut self,
        kind: EntityKind,
        request: &Value,
        base: &str,
    ) -> Result<(Value, bool), StoreError> {
        let Some(request) = request.as_object() else {
            return Err(StoreError::Invalid("the body must be a JSON object".into()));
        };
        let name = match request.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => {
                return Err(StoreError::Invalid(
                    "name is missing or not a string".into(),
                ));
            }
        };
        let mut entity = request.clone();
        // Create requests name domains and data products by FQN, while
        // entities hold references; this subset does not store them.
        entity.remove("domains");
        entity.remove("dataProducts");

        let parent = match kind.parent() {
            Some((field, parent_kind)) => Some(self.parent(parent_kind, field, request)?),
            None => None,
        };
        let fqn = fqn::child(
            parent
                .as_ref()
                .and_then(|p| p["fullyQualifiedName"].as_str()),
            &name,
        )?;
        if let Some(parent) = &parent {
            link_parents(kind, parent, &mut entity);
        }
        if kind == EntityKind::Table {
            set_column_fqns(&fqn, &mut entity);
        }
        mask_secrets("", &mut entity);

        let key = (kind, fqn.clone());
        let previous = self.entities.get(&key);
        let created = previous.is_none();
        let id = previous
            .and_then(|p| p["id"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let version = previous
            .and_then(|p| p["version"].as_f64())
            .map_or(0.1, |v| ((v + 0.1) * 10.0).round() / 10.0);
        entity.insert("id".into(), json!(id));
        entity.insert("fullyQualifiedName".into(), json!(fqn));
        entity.insert("version".into(), json!(version));
        entity.insert("updatedAt".into(), json!(crate::now_millis()));
        entity.insert("updatedBy".into(), json!(UPDATED_BY));
        entity.insert("deleted".into(), json!(false));
        entity.insert(
            "href".into(),
            json!(format!("{base}/api/v1/{}/{id}", kind.collection())),
        );

        let document = Value::Object(entity);
        self.ids.insert(id, key.clone());
        self.entities.insert(key, document.clone());
        Ok((document, created))
    }

    /// Returns the entity of `kind` named `fqn`, unless it is deleted.
    pub fn by_name(&self, kind: EntityKind, fqn: &str) -> Option<&Value> {
        self.entities
            .get(&(kind, fqn.to_string()))
            .filter(|entity| entity["deleted"] != true)
    }

    /// Returns the entity of `kind` with id `id`, unless it is deleted.
    pub fn by_id(&self, kind: EntityKind, id: &str) -> Option<&Value> {
        let (found_kind, fqn) = self.ids.get(id)?;
        if *found_kind != kind {
            return None;
        }
        self.by_name(kind, fqn)
    }

    /// Lists the entities of `kind` that are not deleted, in FQN order, whose
    /// parent reference fields match `filters` (field name to parent FQN, as
    /// in `?service=`).
    pub fn list(&self, kind: EntityKind, filters: &[(&str, &str)]) -> Vec<Value> {
        self.entities
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|(_, entity)| entity)
            .filter(|entity| entity["deleted"] != true)
            .filter(|entity| {
                filters
                    .iter()
                    .all(|(field, fqn)| entity[*field]["fullyQualifiedName"].as_str() == Some(*fqn))
            })
            .cloned()
            .collect()
    }

    /// Marks deleted the entities of `kind` under `scope_fqn` whose FQN is not
    /// in `seen`, as the server's `deleteStale` does after an ingestion.
    /// Returns the number of entities marked.
    pub fn delete_stale(&mut self, kind: EntityKind, scope_fqn: &str, seen: &[&str]) -> usize {
        let prefix = format!("{scope_fqn}.");
        let mut marked = 0;
        for ((entity_kind, fqn), entity) in self.entities.iter_mut() {
            if *entity_kind == kind
                && fqn.starts_with(&prefix)
                && !seen.contains(&fqn.as_str())
                && entity["deleted"] != true
            {
                entity["deleted"] = json!(true);
                marked += 1;
            }
        }
        marked
    }

    /// Stores a pipeline status, replacing an earlier one with the same run id.
    pub fn put_status(&mut self, pipeline_fqn: &str, mut status: Value) -> Result<(), StoreError> {
        let Some(run_id) = status
            .get("runId")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(StoreError::Invalid(
                "runId is missing or not a string".into(),
            ));
        };
        if let Some(object) = status.as_object_mut() {
            mask_secrets("", object);
        }
        let statuses = self.statuses.entry(pipeline_fqn.to_string()).or_default();
        match statuses.iter_mut().find(|s| s["runId"] == run_id.as_str()) {
            Some(slot) => *slot = status,
            None => statuses.push(status),
        }
        Ok(())
    }

    /// Records the final state the runner reported for a run of an ingestion
    /// pipeline stored here, when the workflow itself did not report a final
    /// state (it exits without one when it fails before its first step).
    /// A final state the workflow reported is kept. Returns the state stored.
    pub fn finish_status(
        &mut self,
        pipeline_fqn: &str,
        run_id: &str,
        state: &str,
        start_date: Option<i64>,
        end_date: i64,
    ) -> Option<String> {
        self.by_name(EntityKind::IngestionPipeline, pipeline_fqn)?;
        let statuses = self.statuses.entry(pipeline_fqn.to_string()).or_default();
        let index = match statuses.iter().position(|s| s["runId"] == run_id) {
            Some(index) => index,
            None => {
                statuses.push(json!({
                    "runId": run_id,
                    "startDate": start_date.unwrap_or(end_date),
                    "timestamp": start_date.unwrap_or(end_date),
                }));
                statuses.len() - 1
            }
        };
        let status = &mut statuses[index];
        let current = status["pipelineState"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if FINAL_STATES.contains(&current.as_str()) {
            return Some(current);
        }
        status["pipelineState"] = json!(state);
        status["endDate"] = json!(end_date);
        Some(state.to_string())
    }

    /// Returns the status of run `run_id` of the pipeline.
    pub fn status(&self, pipeline_fqn: &str, run_id: &str) -> Option<&Value> {
        self.statuses
            .get(pipeline_fqn)?
            .iter()
            .find(|status| status["runId"] == run_id)
    }

    /// Returns the statuses of the pipeline whose `startDate` lies in
    /// `[start, end]`; a missing bound does not filter.
    pub fn statuses(&self, pipeline_fqn: &str, start: Option<i64>, end: Option<i64>) -> Vec<Value> {
        let Some(statuses) = self.statuses.get(pipeline_fqn) else {
            return Vec::new();
        };
        statuses
            .iter()
            .filter(|status| {
                let at = status["startDate"].as_i64().unwrap_or(0);
                start.is_none_or(|start| at >= start) && end.is_none_or(|end| at <= end)
            })
            .cloned()
            .collect()
    }

    /// Returns every pipeline FQN with its statuses.
    pub fn all_statuses(&self) -> &BTreeMap<String, Vec<Value>> {
        &self.statuses
    }

    /// Applies JSON Patch `add` and `replace` operations on top-level fields
    /// of the automation workflow `id`, creating its record on first use.
    pub fn patch_workflow(&mut self, id: &str, operations: &Value) -> Result<Value, StoreError> {
        let Some(operations) = operations.as_array() else {
            return Err(StoreError::Invalid(
                "the body must be a JSON Patch array".into(),
            ));
        };
        let mut workflow = self
            .workflows
            .get(id)
            .cloned()
            .unwrap_or_else(|| json!({ "id": id }));
        for operation in operations {
            let op = operation["op"].as_str().unwrap_or_default();
            let path = operation["path"].as_str().unwrap_or_default();
            let field = path.strip_prefix('/').unwrap_or_default();
            if !matches!(op, "add" | "replace") || field.is_empty() || field.contains('/') {
                return Err(StoreError::Invalid(format!(
                    "unsupported patch operation {op:?} on {path:?}; this API applies add and replace on top-level fields"
                )));
            }
            workflow[field] = operation["value"].clone();
        }
        if let Some(object) = workflow.as_object_mut() {
            mask_secrets("", object);
        }
        self.workflows.insert(id.to_string(), workflow.clone());
        Ok(workflow)
    }

    /// Returns every automation workflow record.
    pub fn workflows(&self) -> Vec<Value> {
        self.workflows.values().cloned().collect()
    }

    /// Finds the parent named by `field` of a create request: an FQN string
    /// or an entity reference with an id or FQN.
    fn parent(
        &self,
        kind: EntityKind,
        field: &str,
        request: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let found = match request.get(field) {
            Some(Value::String(fqn)) => self.by_name(kind, fqn),
            Some(Value::Object(reference)) => reference
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| self.by_id(kind, id))
                .or_else(|| {
                    reference
                        .get("fullyQualifiedName")
                        .and_then(Value::as_str)
                        .and_then(|fqn| self.by_name(kind, fqn))
                }),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{field} is missing; name the {} by FQN",
                    kind.type_name()
                )));
            }
        };
        found.cloned().ok_or_else(|| StoreError::ParentNotFound {
            kind: kind.type_name(),
            reference: match &request[field] {
                Value::String(fqn) => fqn.clone(),
                other => other["fullyQualifiedName"]
                    .as_str()
                    .or(other["id"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            },
        })
    }
}

/// Returns an entity reference to `entity` of `kind`.
pub fn reference(kind: EntityKind, entity: &Value) -> Value {
    json!({
        "id": entity["id"],
        "type": kind.type_name(),
        "name": entity["name"],
        "fullyQualifiedName": entity["fullyQualifiedName"],
        "deleted": false,
    })
}

/// Replaces the parent FQN field by references to the parent and its
/// ancestors, as the entity documents of OpenMetadata hold them.
fn link_parents(kind: EntityKind, parent: &Value, entity: &mut Map<String, Value>) {
    match kind {
        EntityKind::Database | EntityKind::IngestionPipeline => {
            entity.insert(
                "service".into(),
                reference(EntityKind::DatabaseService, parent),
            );
        }
        EntityKind::DatabaseSchema => {
            entity.insert("database".into(), reference(EntityKind::Database, parent));
            entity.insert("service".into(), parent["service"].clone());
        }
        EntityKind::Table | EntityKind::StoredProcedure => {
            entity.insert(
                "databaseSchema".into(),
                reference(EntityKind::DatabaseSchema, parent),
            );
            entity.insert("database".into(), parent["database"].clone());
            entity.insert("service".into(), parent["service"].clone());
        }
        EntityKind::DatabaseService => {}
    }
    if kind != EntityKind::IngestionPipeline
        && let Some(service_type) = parent.get("serviceType")
    {
        entity.insert("serviceType".into(), service_type.clone());
    }
}

/// Sets `fullyQualifiedName` on every column and nested child column.
fn set_column_fqns(table_fqn: &str, table: &mut Map<String, Value>) {
    fn walk(parent: &str, columns: &mut Value) {
        let Some(columns) = columns.as_array_mut() else {
            return;
        };
        for column in columns {
            let Some(name) = column["name"].as_str() else {
                continue;
            };
            let Ok(column_fqn) = fqn::child(Some(parent), name) else {
                continue;
            };
            if let Some(children) = column.get_mut("children") {
                walk(&column_fqn, children);
            }
            column["fullyQualifiedName"] = json!(column_fqn);
        }
    }
    if let Some(columns) = table.get_mut("columns") {
        walk(table_fqn, columns);
    }
}

/// Replaces the values of secret fields (by the runner's rules for
/// OpenMetadata `format: password` fields) with [`MASK`].
fn mask_secrets(path: &str, object: &mut Map<String, Value>) {
    for (key, value) in object.iter_mut() {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if crate::secrets::fields::is_secret_field(&child_path, key, None) && value.is_string() {
            *value = json!(MASK);
            continue;
        }
        match value {
            Value::Object(inner) => mask_secrets(&child_path, inner),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        mask_secrets(&child_path, inner);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8585";

    fn store_with_schema() -> EntityStore {
        let mut store = EntityStore::default();
        let service = json!({
            "name": "shop_pg",
            "serviceType": "Postgres",
            "connection": {"config": {"type": "Postgres", "authType": {"password": "pw-123456"}}},
        });
        store
            .create_or_update(EntityKind::DatabaseService, &service, BASE)
            .unwrap();
        store
            .create_or_update(
                EntityKind::Database,
                &json!({"name": "shop", "service": "shop_pg"}),
                BASE,
            )
            .unwrap();
        store
            .create_or_update(
                EntityKind::DatabaseSchema,
                &json!({"name": "inventory.v2", "database": "shop_pg.shop"}),
                BASE,
            )
            .unwrap();
        store
    }

    #[test]
    fn table_gets_fqns_and_references() {
        let mut store = store_with_schema();
        let request = json!({
            "name": "stock.items",
            "databaseSchema": "shop_pg.shop.\"inventory.v2\"",
            "columns": [{"name": "sku", "dataType": "TEXT"}],
            "domains": ["sales"],
        });
        let (table, created) = store
            .create_or_update(EntityKind::Table, &request, BASE)
            .unwrap();
        assert!(created);
        let fqn = "shop_pg.shop.\"inventory.v2\".\"stock.items\"";
        assert_eq!(table["fullyQualifiedName"], fqn);
        assert_eq!(
            table["columns"][0]["fullyQualifiedName"],
            format!("{fqn}.sku")
        );
        assert_eq!(table["service"]["name"], "shop_pg");
        assert_eq!(table["database"]["fullyQualifiedName"], "shop_pg.shop");
        assert_eq!(table["databaseSchema"]["type"], "databaseSchema");
        assert_eq!(table["serviceType"], "Postgres");
        assert!(table.get("domains").is_none());
        assert_eq!(store.by_name(EntityKind::Table, fqn), Some(&table));
    }

    #[test]
    fn update_keeps_id() {
        let mut store = store_with_schema();
        let request = json!({"name": "shop", "service": "shop_pg"});
        let first = store.by_name(EntityKind::Database, "shop_pg.shop").unwrap()["id"].clone();
        let (again, created) = store
            .create_or_update(EntityKind::Database, &request, BASE)
            .unwrap();
        assert!(!created);
        assert_eq!(again["id"], first);
        assert_eq!(again["version"], 0.2);
    }

    #[test]
    fn missing_parent_rejected() {
        let mut store = EntityStore::default();
        let error = store
            .create_or_update(
                EntityKind::Database,
                &json!({"name": "x", "service": "nope"}),
                BASE,
            )
            .unwrap_err();
        assert!(error.to_string().contains("\"nope\" not found"), "{error}");
    }

    #[test]
    fn service_password_masked() {
        let store = store_with_schema();
        let service = store
            .by_name(EntityKind::DatabaseService, "shop_pg")
            .unwrap();
        assert_eq!(
            service["connection"]["config"]["authType"]["password"],
            MASK
        );
        assert!(!service.to_string().contains("pw-123456"));
    }

    #[test]
    fn list_filters_by_parent() {
        let mut store = store_with_schema();
        store
            .create_or_update(
                EntityKind::DatabaseSchema,
                &json!({"name": "sales", "database": "shop_pg.shop"}),
                BASE,
            )
            .unwrap();
        let schemas = store.list(EntityKind::DatabaseSchema, &[("database", "shop_pg.shop")]);
        assert_eq!(schemas.len(), 2);
        assert!(
            store
                .list(EntityKind::DatabaseSchema, &[("database", "other")])
                .is_empty()
        );
        assert!(store.list(EntityKind::Table, &[]).is_empty());
    }

    #[test]
    fn delete_stale_marks_unseen() {
        let mut store = store_with_schema();
        for name in ["a", "b"] {
            let request = json!({"name": name, "databaseSchema": "shop_pg.shop.\"inventory.v2\"", "columns": []});
            store
                .create_or_update(EntityKind::Table, &request, BASE)
                .unwrap();
        }
        let seen = ["shop_pg.shop.\"inventory.v2\".a"];
        assert_eq!(
            store.delete_stale(EntityKind::Table, "shop_pg.shop", &seen),
            1
        );
        assert_eq!(store.list(EntityKind::Table, &[]).len(), 1);
        assert!(
            store
                .by_name(EntityKind::Table, "shop_pg.shop.\"inventory.v2\".b")
                .is_none()
        );
    }

    #[test]
    fn statuses_replace_by_run_id() {
        let mut store = EntityStore::default();
        store
            .put_status(
                "svc.p",
                json!({"runId": "r1", "pipelineState": "running", "startDate": 5}),
            )
            .unwrap();
        store
            .put_status(
                "svc.p",
                json!({"runId": "r1", "pipelineState": "success", "startDate": 5}),
            )
            .unwrap();
        assert_eq!(
            store.status("svc.p", "r1").unwrap()["pipelineState"],
            "success"
        );
        assert_eq!(store.statuses("svc.p", Some(1), Some(10)).len(), 1);
        assert!(store.statuses("svc.p", Some(6), None).is_empty());
    }

    #[test]
    fn runner_final_state_fills_unfinished_status() {
        let mut store = store_with_schema();
        let pipeline = json!({"name": "ingest", "service": {"fullyQualifiedName": "shop_pg"}, "pipelineType": "metadata"});
        store
            .create_or_update(EntityKind::IngestionPipeline, &pipeline, BASE)
            .unwrap();
        store
            .put_status(
                "shop_pg.ingest",
                json!({"runId": "r1", "pipelineState": "running", "startDate": 5}),
            )
            .unwrap();
        let stored = store.finish_status("shop_pg.ingest", "r1", "failed", Some(5), 9);
        assert_eq!(stored.as_deref(), Some("failed"));
        assert_eq!(store.status("shop_pg.ingest", "r1").unwrap()["endDate"], 9);

        store
            .put_status(
                "shop_pg.ingest",
                json!({"runId": "r2", "pipelineState": "success", "startDate": 5}),
            )
            .unwrap();
        let final_state = store.finish_status("shop_pg.ingest", "r2", "failed", Some(5), 9);
        assert_eq!(
            final_state.as_deref(),
            Some("success"),
            "the workflow's final state is kept"
        );

        let created = store.finish_status("shop_pg.ingest", "r3", "stopped", None, 9);
        assert_eq!(created.as_deref(), Some("stopped"));
        assert!(
            store
                .finish_status("shop_pg.other", "r4", "failed", None, 9)
                .is_none()
        );
    }

    #[test]
    fn workflow_patch_adds_fields() {
        let mut store = EntityStore::default();
        let patch = json!([
            {"op": "add", "path": "/response", "value": {"status": "Successful"}},
            {"op": "add", "path": "/status", "value": "Successful"},
        ]);
        let workflow = store.patch_workflow("w1", &patch).unwrap();
        assert_eq!(workflow["status"], "Successful");
        assert_eq!(workflow["response"]["status"], "Successful");
        let bad = json!([{"op": "remove", "path": "/status"}]);
        assert!(store.patch_workflow("w1", &bad).is_err());
    }
}
