//! The access policy: which references a run may resolve.
//!
//! `secrets.allowed_prefixes` lists path prefixes. A prefix may contain
//! `{service}` and `{pipelineType}`, filled in from the run, so that with
//! `/collate/hybrid-ingestion/{service}/` a run of service `pg_sales` may read
//! `/collate/hybrid-ingestion/pg_sales/password` and nothing under another
//! service's folder. A placeholder whose value is unknown (no run, or a
//! workflow without `source.serviceName`) makes its prefix match nothing.
//!
//! Placeholder values are normalised into one path segment before they are
//! placed in a prefix: every byte outside `A-Z a-z 0-9 _ . -` is
//! percent-encoded, and a value of `.` or `..` matches nothing. A service named
//! `pg/finance` gets the prefix `/collate/hybrid-ingestion/pg%2Ffinance/`, so
//! neither `/` nor `..` in a name reaches another folder. References themselves
//! are compared as written; the reference parser rejects `.` and `..`
//! segments.

use std::fmt;

use super::{SecretError, SecretRef};

/// Placeholders a prefix may contain.
pub const PLACEHOLDERS: [&str; 2] = ["{service}", "{pipelineType}"];

/// Identity of the run a reference is resolved for, used to fill in prefixes
/// and written to the audit log. Every field is empty outside a run,
/// as for `hybrid-runner secrets get`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub run_id: Option<String>,
    /// The service the run ingests, already checked against the pipeline FQN.
    pub service: Option<String>,
    pub pipeline_fqn: Option<String>,
    pub pipeline_type: Option<String>,
}

/// The allowed reference prefixes.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    prefixes: Vec<String>,
}

impl AccessPolicy {
    pub fn new(prefixes: Vec<String>) -> Self {
        AccessPolicy { prefixes }
    }

    /// Reports whether any prefix depends on the run.
    pub fn uses_placeholders(&self) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| PLACEHOLDERS.iter().any(|name| prefix.contains(name)))
    }

    /// Allows a reference under one of the prefixes, with placeholders filled
    /// in from `scope`.
    pub fn check(&self, reference: &SecretRef, scope: &Scope) -> Result<(), SecretError> {
        let prefixes = self.prefixes_for(scope);
        if prefixes
            .iter()
            .any(|prefix| reference.path().starts_with(prefix.as_str()))
        {
            return Ok(());
        }
        let mut allowed: Vec<String> = prefixes;
        let unfilled: Vec<&String> = self
            .prefixes
            .iter()
            .filter(|prefix| fill(prefix, scope).is_none())
            .collect();
        for prefix in unfilled {
            allowed.push(format!(
                "{prefix} (not filled in: {})",
                missing(prefix, scope)
            ));
        }
        Err(SecretError::Denied {
            reference: reference.to_string(),
            allowed: allowed.join(", "),
        })
    }

    /// Returns the prefixes that apply to `scope`. A prefix with a placeholder
    /// that `scope` cannot fill is left out.
    pub fn prefixes_for(&self, scope: &Scope) -> Vec<String> {
        self.prefixes
            .iter()
            .filter_map(|prefix| fill(prefix, scope))
            .collect()
    }
}

/// Replaces the placeholders of `prefix`, or returns `None` when a value is
/// missing or cannot be a path segment.
fn fill(prefix: &str, scope: &Scope) -> Option<String> {
    let mut filled = prefix.to_string();
    if filled.contains("{service}") {
        let segment = path_segment(scope.service.as_deref()?)?;
        filled = filled.replace("{service}", &segment);
    }
    if filled.contains("{pipelineType}") {
        let segment = path_segment(scope.pipeline_type.as_deref()?)?;
        filled = filled.replace("{pipelineType}", &segment);
    }
    Some(filled)
}

/// Names the placeholders of `prefix` that `scope` cannot fill, for messages.
fn missing(prefix: &str, scope: &Scope) -> String {
    let mut names = Vec::new();
    if prefix.contains("{service}") && scope.service.as_deref().and_then(path_segment).is_none() {
        names.push(match &scope.service {
            Some(service) => format!("service {service:?} cannot be a path segment"),
            None => {
                "no service outside a run; hybrid-runner secrets get takes --service".to_string()
            }
        });
    }
    if prefix.contains("{pipelineType}")
        && scope
            .pipeline_type
            .as_deref()
            .and_then(path_segment)
            .is_none()
    {
        names.push(
            "no pipeline type outside a run; hybrid-runner secrets get takes --pipeline-type"
                .to_string(),
        );
    }
    names.join(", ")
}

/// Normalises a placeholder value into one path segment: bytes outside
/// `A-Z a-z 0-9 _ . -` are percent-encoded. Returns `None` for an empty value,
/// `.` and `..`.
pub fn path_segment(value: &str) -> Option<String> {
    if value.is_empty() || value == "." || value == ".." {
        return None;
    }
    let mut segment = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    Some(segment)
}

/// A fully qualified name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FqnError(pub String);

impl fmt::Display for FqnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fully qualified name {:?}: parts are separated by '.', and a part that contains '.' is enclosed in double quotes",
            self.0.chars().take(200).collect::<String>(),
        )
    }
}

/// Splits an OpenMetadata fully qualified name into its parts. Parts are
/// separated by `.`, and a part that contains `.` is written in double quotes,
/// as in `"pg.sales".ingest_metadata`.
pub fn split_fqn(fqn: &str) -> Result<Vec<String>, FqnError> {
    let invalid = || FqnError(fqn.to_string());
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut part_was_quoted = false;
    for c in fqn.chars() {
        match c {
            '"' if quoted => quoted = false,
            '"' if current.is_empty() && !part_was_quoted => {
                quoted = true;
                part_was_quoted = true;
            }
            '"' => return Err(invalid()),
            '.' if !quoted => {
                if current.is_empty() {
                    return Err(invalid());
                }
                parts.push(std::mem::take(&mut current));
                part_was_quoted = false;
            }
            _ if part_was_quoted && !quoted => return Err(invalid()),
            _ => current.push(c),
        }
    }
    if quoted || current.is_empty() {
        return Err(invalid());
    }
    parts.push(current);
    Ok(parts)
}

/// Returns the service a run belongs to: `source.serviceName` of its workflow
/// and the first part of its pipeline FQN, which must agree when both are
/// present. Both are compared after [`path_segment`] normalisation.
pub fn run_service(
    service_name: Option<&str>,
    pipeline_fqn: Option<&str>,
) -> Result<Option<String>, String> {
    let from_fqn = match pipeline_fqn.filter(|fqn| !fqn.is_empty()) {
        Some(fqn) => Some(
            split_fqn(fqn)
                .map_err(|error| format!("pipelineFqn: {error}"))?
                .swap_remove(0),
        ),
        None => None,
    };
    match (service_name, from_fqn) {
        (Some(name), Some(first)) if path_segment(name) != path_segment(&first) => Err(format!(
            "source.serviceName {name:?} does not match the service {first:?} of pipelineFqn {:?}; a run may only use its own service's secrets",
            pipeline_fqn.unwrap_or_default()
        )),
        (Some(name), _) => Ok(Some(name.to_string())),
        (None, from_fqn) => Ok(from_fqn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> SecretRef {
        SecretRef::parse(text).expect("valid reference")
    }

    fn scope(service: &str) -> Scope {
        Scope {
            service: Some(service.to_string()),
            pipeline_type: Some("metadata".to_string()),
            ..Scope::default()
        }
    }

    fn scoped_policy() -> AccessPolicy {
        AccessPolicy::new(vec!["/collate/hybrid-ingestion/{service}/".into()])
    }

    #[test]
    fn service_prefix_allows_own_service() {
        let allowed = scoped_policy().check(
            &reference("secret:/collate/hybrid-ingestion/pg_sales/password"),
            &scope("pg_sales"),
        );
        assert_eq!(allowed, Ok(()));
    }

    #[test]
    fn service_prefix_denies_other_services() {
        let policy = scoped_policy();
        for target in [
            "secret:/collate/hybrid-ingestion/pg_finance/password",
            "secret:/collate/hybrid-ingestion/pg_sales_old/password",
            "secret:/collate/hybrid-ingestion/pg_sales%2F..%2Fpg_finance/password",
            "secret:/collate/hybrid-ingestion/pg_sales",
        ] {
            let denied = policy.check(&reference(target), &scope("pg_sales"));
            assert!(
                matches!(denied, Err(SecretError::Denied { .. })),
                "{target}"
            );
        }
    }

    #[test]
    fn service_with_separator_stays_in_one_segment() {
        let policy = scoped_policy();
        let denied = policy.check(
            &reference("secret:/collate/hybrid-ingestion/pg/finance/password"),
            &scope("pg/finance"),
        );
        assert!(matches!(denied, Err(SecretError::Denied { .. })));
        assert_eq!(
            policy.prefixes_for(&scope("pg/finance")),
            vec!["/collate/hybrid-ingestion/pg%2Ffinance/".to_string()]
        );
    }

    #[test]
    fn dot_segments_and_empty_services_match_nothing() {
        let policy = AccessPolicy::new(vec!["/collate/{service}/".into()]);
        for service in ["..", ".", ""] {
            assert!(
                policy.prefixes_for(&scope(service)).is_empty(),
                "{service:?}"
            );
        }
        let denied = policy
            .check(&reference("secret:/collate/other/password"), &scope(".."))
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "secret:/collate/other/password is outside the allowed prefixes (/collate/{service}/ (not filled in: service \"..\" cannot be a path segment)); store it under one of them or add its prefix to secrets.allowed_prefixes"
        );
    }

    #[test]
    fn unknown_service_denies_scoped_prefix_only() {
        let policy = AccessPolicy::new(vec![
            "/collate/hybrid-ingestion/{service}/".into(),
            "/collate/shared/".into(),
        ]);
        let outside_run = Scope::default();
        assert_eq!(
            policy.check(&reference("secret:/collate/shared/ca"), &outside_run),
            Ok(())
        );
        let denied = policy
            .check(
                &reference("secret:/collate/hybrid-ingestion/pg_sales/password"),
                &outside_run,
            )
            .unwrap_err();
        assert!(
            denied.to_string().contains("(not filled in: no service outside a run; hybrid-runner secrets get takes --service)"),
            "{denied}"
        );
    }

    #[test]
    fn pipeline_type_placeholder_is_filled() {
        let policy = AccessPolicy::new(vec!["/collate/{pipelineType}/{service}/".into()]);
        assert_eq!(
            policy.check(
                &reference("secret:/collate/metadata/pg_sales/password"),
                &scope("pg_sales")
            ),
            Ok(())
        );
        assert!(policy.uses_placeholders());
        assert!(!AccessPolicy::new(vec!["/collate/".into()]).uses_placeholders());
    }

    #[test]
    fn path_segment_encodes_other_bytes() {
        assert_eq!(path_segment("pg_sales-2.eu"), Some("pg_sales-2.eu".into()));
        assert_eq!(path_segment("a b/c%"), Some("a%20b%2Fc%25".into()));
        assert_eq!(path_segment("crème"), Some("cr%C3%A8me".into()));
        assert_eq!(path_segment(".."), None);
    }

    #[test]
    fn fqn_parts_split_on_unquoted_dots() {
        assert_eq!(
            split_fqn("pg_sales.ingest"),
            Ok(vec!["pg_sales".into(), "ingest".into()])
        );
        assert_eq!(
            split_fqn("\"pg.sales\".ingest"),
            Ok(vec!["pg.sales".into(), "ingest".into()])
        );
        for invalid in ["", ".a", "a..b", "a.", "\"a", "a\"b\".c", "\"a\"b.c"] {
            assert!(split_fqn(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn run_service_requires_agreement() {
        assert_eq!(
            run_service(Some("pg_sales"), Some("pg_sales.ingest")),
            Ok(Some("pg_sales".into()))
        );
        assert_eq!(
            run_service(None, Some("pg_sales.ingest")),
            Ok(Some("pg_sales".into()))
        );
        assert_eq!(
            run_service(Some("pg_sales"), None),
            Ok(Some("pg_sales".into()))
        );
        assert_eq!(
            run_service(Some("pg.sales"), Some("\"pg.sales\".ingest")),
            Ok(Some("pg.sales".into()))
        );
        let mismatch = run_service(Some("pg_finance"), Some("pg_sales.ingest")).unwrap_err();
        assert_eq!(
            mismatch,
            "source.serviceName \"pg_finance\" does not match the service \"pg_sales\" of pipelineFqn \"pg_sales.ingest\"; a run may only use its own service's secrets"
        );
        assert!(run_service(Some("x"), Some("a..b")).is_err());
    }
}
