use std::io::Write;

use super::*;

fn file_resolver(entries: &str, redactor: Arc<Redactor>) -> (Resolver, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(entries.as_bytes()).unwrap();
    let resolver = Resolver::new(
        Arc::new(FileProvider::new(file.path().to_path_buf())),
        AccessPolicy::new(vec!["/collate/hybrid-ingestion/".into()]),
        redactor,
    );
    (resolver, file)
}

fn reference(text: &str) -> SecretRef {
    SecretRef::parse(text).unwrap()
}

#[tokio::test]
async fn file_value_is_resolved_and_registered() {
    let redactor = Arc::new(Redactor::default());
    let (resolver, _file) = file_resolver(
        "/collate/hybrid-ingestion/mysql/password: \"Mysql-Pa55!word\"\n",
        Arc::clone(&redactor),
    );
    let value = resolver
        .resolve(&reference(
            "secret:/collate/hybrid-ingestion/mysql/password",
        ))
        .await
        .unwrap();
    assert_eq!(value.expose(), "Mysql-Pa55!word");
    assert_eq!(format!("{value} {value:?}"), "****** ******");
    assert_eq!(redactor.redact("pw=Mysql-Pa55!word"), "pw=******");
}

#[tokio::test]
async fn missing_secret_names_reference() {
    let (resolver, _file) = file_resolver("{}\n", Arc::new(Redactor::default()));
    let error = resolver
        .resolve(&reference("secret:/collate/hybrid-ingestion/nope"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "secret:/collate/hybrid-ingestion/nope was not found in the file store (looked up as \"/collate/hybrid-ingestion/nope\")"
    );
}

#[tokio::test]
async fn outside_prefix_is_denied_before_fetch() {
    let (resolver, file) = file_resolver(
        "/prod/payments/db-password: do-not-read-me\n",
        Arc::new(Redactor::default()),
    );
    // Removing the file shows the provider is never called: a fetch would fail to read it.
    drop(file);
    let references: BTreeSet<SecretRef> = [reference("secret:/prod/payments/db-password")].into();
    let error = resolver.resolve_all(&references).await.unwrap_err();
    assert!(matches!(error, SecretError::Denied { .. }), "{error}");
    assert!(error.to_string().contains("outside the allowed prefixes"));
}

#[tokio::test]
async fn env_provider_maps_path_to_variable() {
    let provider = EnvProvider::new("HYBRID_RUNNER_SECRET_".into());
    let name = provider
        .map_name(&reference(
            "secret:/collate/hybrid-ingestion/my.db/pass word",
        ))
        .unwrap();
    assert_eq!(
        name,
        "HYBRID_RUNNER_SECRET_COLLATE_HYBRID_INGESTION_MY_DB_PASS_WORD"
    );
    let missing = provider
        .fetch("HYBRID_RUNNER_SECRET_SURELY_UNSET_123", None)
        .await;
    assert_eq!(missing.unwrap_err(), FetchError::NotFound);
}

#[tokio::test]
async fn short_value_is_resolved_but_not_registered() {
    let redactor = Arc::new(Redactor::default());
    let (resolver, _file) = file_resolver(
        "/collate/hybrid-ingestion/pin: \"1234\"\n",
        Arc::clone(&redactor),
    );
    let value = resolver
        .resolve(&reference("secret:/collate/hybrid-ingestion/pin"))
        .await
        .unwrap();
    assert_eq!(value.expose(), "1234");
    assert!(redactor.is_empty());
}
