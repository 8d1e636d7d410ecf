use std::collections::BTreeSet;
use std::io::Write;

use super::*;

fn file_resolver(entries: &str, redactor: Arc<Redactor>) -> (Resolver, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(entries.as_bytes()).unwrap();
    let resolver = Resolver::new(
        Arc::new(FileProvider::new(file.path().to_path_buf())),
        AccessPolicy::new(vec!["/collate/hybrid-ingestion/".into()]),
        redactor,
        ResolverSettings::default(),
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
    let error = resolver
        .resolve_all(&references, &Scope::default())
        .await
        .unwrap_err();
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

/// A store that fails its first `failures` fetches with `error`, counting calls.
struct FlakyStore {
    calls: std::sync::atomic::AtomicU32,
    failures: u32,
    error: FetchError,
    delay: std::time::Duration,
}

#[async_trait::async_trait]
impl SecretProvider for FlakyStore {
    fn kind(&self) -> &'static str {
        "flaky"
    }

    fn map_name(&self, reference: &SecretRef) -> Result<String, String> {
        Ok(reference.path().to_string())
    }

    async fn fetch(&self, _name: &str, _version: Option<&str>) -> Result<SecretValue, FetchError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if call < self.failures {
            return Err(self.error.clone());
        }
        Ok(SecretValue::new("flaky-store-value".into()))
    }
}

fn flaky_resolver(store: Arc<FlakyStore>, settings: ResolverSettings) -> Resolver {
    Resolver::new(
        store,
        AccessPolicy::new(vec!["/collate/hybrid-ingestion/".into()]),
        Arc::new(Redactor::default()),
        settings,
    )
}

fn flaky(failures: u32, error: FetchError) -> Arc<FlakyStore> {
    Arc::new(FlakyStore {
        calls: Default::default(),
        failures,
        error,
        delay: std::time::Duration::from_millis(10),
    })
}

#[tokio::test(start_paused = true)]
async fn throttling_honours_retry_after() {
    let after = std::time::Duration::from_secs(3);
    let store = flaky(
        2,
        FetchError::Throttled {
            retry_after: Some(after),
        },
    );
    let resolver = flaky_resolver(Arc::clone(&store), ResolverSettings::default());
    let started = tokio::time::Instant::now();
    let value = resolver
        .resolve(&reference("secret:/collate/hybrid-ingestion/a"))
        .await
        .unwrap();
    assert_eq!(value.expose(), "flaky-store-value");
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(started.elapsed() >= after * 2, "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn throttled_after_all_attempts_names_count() {
    let store = flaky(10, FetchError::Throttled { retry_after: None });
    let resolver = flaky_resolver(Arc::clone(&store), ResolverSettings::default());
    let error = resolver
        .resolve(&reference("secret:/collate/hybrid-ingestion/a"))
        .await
        .unwrap_err();
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert!(error.to_string().contains("throttled 4 times"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn not_found_is_not_retried() {
    let store = flaky(10, FetchError::NotFound);
    let resolver = flaky_resolver(Arc::clone(&store), ResolverSettings::default());
    let error = resolver
        .resolve(&reference("secret:/collate/hybrid-ingestion/a"))
        .await
        .unwrap_err();
    assert!(matches!(error, SecretError::NotFound { .. }));
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_store_times_out_as_network_error() {
    let store = Arc::new(FlakyStore {
        calls: Default::default(),
        failures: 0,
        error: FetchError::NotFound,
        delay: std::time::Duration::from_secs(60),
    });
    let settings = ResolverSettings {
        max_attempts: 2,
        ..ResolverSettings::default()
    };
    let resolver = flaky_resolver(Arc::clone(&store), settings);
    let error = resolver
        .resolve(&reference("secret:/collate/hybrid-ingestion/a"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("after 2 attempts"), "{error}");
    assert!(error.to_string().contains("timed out after 10s"), "{error}");
}

#[tokio::test]
async fn identical_lookups_share_one_request() {
    let store = flaky(0, FetchError::NotFound);
    let resolver = flaky_resolver(Arc::clone(&store), ResolverSettings::default());
    let target = reference("secret:/collate/hybrid-ingestion/shared");
    let lookups = (0..5).map(|_| resolver.resolve(&target));
    let values = futures_util::future::join_all(lookups).await;
    assert!(values.iter().all(Result::is_ok));
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cache_serves_until_ttl() {
    let store = flaky(0, FetchError::NotFound);
    let settings = ResolverSettings {
        cache_ttl: Some(std::time::Duration::from_secs(300)),
        ..ResolverSettings::default()
    };
    let resolver = flaky_resolver(Arc::clone(&store), settings);
    let target = reference("secret:/collate/hybrid-ingestion/cached");
    let (_, first) = resolver.resolve_with_source(&target).await.unwrap();
    let (_, second) = resolver.resolve_with_source(&target).await.unwrap();
    assert_eq!(first, Source::Store);
    assert_eq!(second, Source::Cache);
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cache_is_off_by_default() {
    let store = flaky(0, FetchError::NotFound);
    let resolver = flaky_resolver(Arc::clone(&store), ResolverSettings::default());
    let target = reference("secret:/collate/hybrid-ingestion/fresh");
    resolver.resolve(&target).await.unwrap();
    resolver.resolve(&target).await.unwrap();
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}
