use std::time::Duration;

use super::fake_api::{FAKE_USER, FakeSecretsApi, RunningFake};
use super::*;

const TOKEN: &str = "fake-token-0123456789";
const MYSQL_NAME: &str = "collate-hybrid-ingestion-mysql-password";
const MYSQL_PASSWORD: &str = "Mysql-Pa55!word";

/// Starts the fake and builds a provider that reaches it through a kubeconfig
/// whose current context has `context_namespace`.
async fn start(
    api: FakeSecretsApi,
    context_namespace: Option<&str>,
    settings: KubernetesSettings,
) -> (RunningFake, KubernetesProvider, tempfile::TempDir) {
    let fake = api.start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.write_kubeconfig(dir.path(), TOKEN, context_namespace);
    let settings = KubernetesSettings {
        kubeconfig: Some(kubeconfig),
        ..settings
    };
    let provider = KubernetesProvider::new(&settings).await.unwrap();
    (fake, provider, dir)
}

fn in_namespace(namespace: &str) -> KubernetesSettings {
    KubernetesSettings {
        namespace: Some(namespace.to_string()),
        ..KubernetesSettings::default()
    }
}

fn mysql_api() -> FakeSecretsApi {
    FakeSecretsApi::new(TOKEN).secret(
        "ingestion",
        MYSQL_NAME,
        &[("value", MYSQL_PASSWORD.as_bytes())],
    )
}

fn reference(text: &str) -> SecretRef {
    SecretRef::parse(text).unwrap()
}

#[tokio::test]
async fn fetch_returns_value() {
    let (fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;

    let value = provider.fetch(MYSQL_NAME, None).await.unwrap();

    assert_eq!(value.expose(), MYSQL_PASSWORD);
    assert_eq!(provider.kind(), "kubernetes");
    assert_eq!(fake.requested_names(), vec![MYSQL_NAME.to_string()]);
}

#[tokio::test]
async fn reference_is_fetched_by_mapped_name() {
    let (fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;
    let reference = reference("secret:/collate/hybrid-ingestion/MySQL/password");

    let name = provider.map_name(&reference).unwrap();
    let value = provider.fetch(&name, reference.version()).await.unwrap();

    assert_eq!(name, MYSQL_NAME);
    assert_eq!(value.expose(), MYSQL_PASSWORD);
    assert_eq!(fake.requested_names(), vec![MYSQL_NAME.to_string()]);
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    let (_fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;

    let error = provider.fetch("no-such-secret", None).await.unwrap_err();

    assert_eq!(error, FetchError::NotFound);
}

#[tokio::test]
async fn forbidden_secret_is_access_denied() {
    let api = mysql_api().forbid(MYSQL_NAME);
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch(MYSQL_NAME, None).await.unwrap_err();

    let FetchError::AccessDenied(detail) = error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert!(detail.contains("is forbidden"), "{detail}");
    assert!(detail.contains(FAKE_USER), "{detail}");
    assert!(
        detail.contains("get on secrets in namespace ingestion"),
        "{detail}"
    );
    assert!(!detail.contains(MYSQL_PASSWORD), "{detail}");
}

#[tokio::test]
async fn wrong_token_is_access_denied() {
    let fake = mysql_api().start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.write_kubeconfig(dir.path(), "wrong-token", None);
    let settings = KubernetesSettings {
        kubeconfig: Some(kubeconfig),
        ..in_namespace("ingestion")
    };
    let provider = KubernetesProvider::new(&settings).await.unwrap();

    let error = provider.fetch(MYSQL_NAME, None).await.unwrap_err();

    let FetchError::AccessDenied(detail) = error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert!(detail.contains("401 Unauthorized"), "{detail}");
    assert!(!detail.contains("wrong-token"), "{detail}");
}

#[tokio::test]
async fn missing_key_names_setting() {
    let api = FakeSecretsApi::new(TOKEN).secret(
        "ingestion",
        MYSQL_NAME,
        &[("password", MYSQL_PASSWORD.as_bytes())],
    );
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch(MYSQL_NAME, None).await.unwrap_err();

    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(
        detail.starts_with(&format!(
            "secret {MYSQL_NAME} has no key value; set secrets.provider.key"
        )),
        "{detail}"
    );
    assert!(detail.contains("its keys are: password"), "{detail}");
    assert!(!detail.contains(MYSQL_PASSWORD), "{detail}");
}

#[tokio::test]
async fn custom_key_is_read() {
    let api = FakeSecretsApi::new(TOKEN).secret(
        "ingestion",
        MYSQL_NAME,
        &[
            ("value", b"not-this-one"),
            ("password", MYSQL_PASSWORD.as_bytes()),
        ],
    );
    let settings = KubernetesSettings {
        key: "password".to_string(),
        ..in_namespace("ingestion")
    };
    let (_fake, provider, _dir) = start(api, None, settings).await;

    let value = provider.fetch(MYSQL_NAME, None).await.unwrap();

    assert_eq!(value.expose(), MYSQL_PASSWORD);
}

#[tokio::test]
async fn non_utf8_value_is_rejected() {
    let bytes: &[u8] = &[0xff, 0xfe, 0x41, 0x42];
    let api = FakeSecretsApi::new(TOKEN).secret("ingestion", "binary", &[("value", bytes)]);
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch("binary", None).await.unwrap_err();

    assert_eq!(
        error,
        FetchError::Other(
            "key value of secret binary is not valid UTF-8; store the value as text".into()
        )
    );
}

#[tokio::test]
async fn version_is_rejected_without_request() {
    let (fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;

    let error = provider.fetch(MYSQL_NAME, Some("3")).await.unwrap_err();

    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(detail.contains("have no versions"), "{detail}");
    assert!(detail.contains("remove #3"), "{detail}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn invalid_name_is_rejected_without_request() {
    let (fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;

    for name in ["../configmaps/x", "Upper", "a..b", "-a", ""] {
        let error = provider.fetch(name, None).await.unwrap_err();
        assert!(
            matches!(&error, FetchError::InvalidName(detail) if detail.contains("not a valid Kubernetes Secret name")),
            "{name}: {error:?}"
        );
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn throttled_carries_retry_after() {
    let api = mysql_api().fail("busy", 429, Some(7), "TooManyRequests");
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch("busy", None).await.unwrap_err();

    assert_eq!(
        error,
        FetchError::Throttled {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[tokio::test]
async fn throttled_falls_back_to_status_details() {
    let (_fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;
    let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"TooManyRequests","code":429,"details":{"retryAfterSeconds":3}}"#;

    let error = provider.status_error(429, body, None, "busy");

    assert_eq!(
        error,
        FetchError::Throttled {
            retry_after: Some(Duration::from_secs(3))
        }
    );
}

#[tokio::test]
async fn server_error_is_unavailable() {
    let api = mysql_api().fail("broken", 503, None, "ServiceUnavailable");
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch("broken", None).await.unwrap_err();

    let FetchError::Unavailable(detail) = error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(
        detail.contains("returned 503: injected failure"),
        "{detail}"
    );
}

#[tokio::test]
async fn other_client_error_is_other() {
    let api = mysql_api().fail("odd", 400, None, "BadRequest");
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch("odd", None).await.unwrap_err();

    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(
        detail.contains("returned 400 for secret odd in namespace ingestion"),
        "{detail}"
    );
}

#[tokio::test]
async fn oversized_response_is_rejected() {
    let huge = vec![b'a'; MAX_RESPONSE_BYTES];
    let api = FakeSecretsApi::new(TOKEN).secret("ingestion", "huge", &[("value", &huge)]);
    let (_fake, provider, _dir) = start(api, None, in_namespace("ingestion")).await;

    let error = provider.fetch("huge", None).await.unwrap_err();

    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(detail.contains("larger than 4194304 bytes"), "{detail}");
}

#[tokio::test]
async fn refused_connection_is_network() {
    // Binding and dropping a listener leaves a 127.0.0.1 port with no server.
    let fake = mysql_api().start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let kubeconfig = fake.write_kubeconfig(dir.path(), TOKEN, None);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let text = text.replace(&fake.addr.to_string(), &format!("127.0.0.1:{closed_port}"));
    std::fs::write(&kubeconfig, text).unwrap();
    let settings = KubernetesSettings {
        kubeconfig: Some(kubeconfig),
        ..in_namespace("ingestion")
    };
    let provider = KubernetesProvider::new(&settings).await.unwrap();

    let error = provider.fetch(MYSQL_NAME, None).await.unwrap_err();

    let FetchError::Network(detail) = error else {
        panic!("expected Network, got {error:?}");
    };
    assert!(
        detail.contains(&format!("127.0.0.1:{closed_port}")),
        "{detail}"
    );
}

#[tokio::test]
async fn namespace_from_settings_wins() {
    let api = mysql_api().secret("team-a", MYSQL_NAME, &[("value", b"team-a-password")]);
    let (fake, provider, _dir) = start(api, Some("ingestion"), in_namespace("team-a")).await;

    let value = provider.fetch(MYSQL_NAME, None).await.unwrap();

    assert_eq!(provider.namespace(), "team-a");
    assert_eq!(value.expose(), "team-a-password");
    assert_eq!(fake.requests()[0].namespace, "team-a");
}

#[tokio::test]
async fn namespace_from_kubeconfig_context() {
    let settings = KubernetesSettings::default();
    let (fake, provider, _dir) = start(mysql_api(), Some("ingestion"), settings).await;

    let value = provider.fetch(MYSQL_NAME, None).await.unwrap();

    assert_eq!(provider.namespace(), "ingestion");
    assert_eq!(value.expose(), MYSQL_PASSWORD);
    assert_eq!(fake.requests()[0].namespace, "ingestion");
}

#[tokio::test]
async fn namespace_from_named_context() {
    let settings = KubernetesSettings {
        context: Some("other".to_string()),
        ..KubernetesSettings::default()
    };
    let (_fake, provider, _dir) = start(mysql_api(), Some("ingestion"), settings).await;

    assert_eq!(provider.namespace(), "other-team");
}

#[tokio::test]
async fn namespace_defaults_to_default() {
    let (_fake, provider, _dir) = start(mysql_api(), None, KubernetesSettings::default()).await;

    assert_eq!(provider.namespace(), "default");
}

#[tokio::test]
async fn unknown_context_is_reported() {
    let fake = mysql_api().start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = KubernetesSettings {
        kubeconfig: Some(fake.write_kubeconfig(dir.path(), TOKEN, None)),
        context: Some("staging".to_string()),
        ..KubernetesSettings::default()
    };

    let error = KubernetesProvider::new(&settings).await.err().unwrap();

    assert!(error.contains("context \"staging\""), "{error}");
    assert!(error.contains("secrets.provider.context"), "{error}");
}

#[tokio::test]
async fn missing_kubeconfig_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent-kubeconfig");
    let settings = KubernetesSettings {
        kubeconfig: Some(path.clone()),
        ..KubernetesSettings::default()
    };

    let error = KubernetesProvider::new(&settings).await.err().unwrap();

    assert!(
        error.starts_with(&format!("cannot read kubeconfig {}", path.display())),
        "{error}"
    );
    assert!(
        error.contains("check secrets.provider.kubeconfig"),
        "{error}"
    );
}

#[tokio::test]
async fn kubeconfig_syntax_error_hides_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let text = "apiVersion: v1\nusers:\n- name: runner\n  user:\n    token: tok-SEKRET-123\n   broken: [\n";
    std::fs::write(&path, text).unwrap();
    let settings = KubernetesSettings {
        kubeconfig: Some(path),
        ..KubernetesSettings::default()
    };

    let error = KubernetesProvider::new(&settings).await.err().unwrap();

    assert!(
        error.contains("invalid kubeconfig YAML at line 6"),
        "{error}"
    );
    assert!(!error.contains("tok-SEKRET-123"), "{error}");
}

#[tokio::test]
async fn invalid_namespace_is_reported() {
    let fake = mysql_api().start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = KubernetesSettings {
        kubeconfig: Some(fake.write_kubeconfig(dir.path(), TOKEN, None)),
        ..in_namespace("Team_A")
    };

    let error = KubernetesProvider::new(&settings).await.err().unwrap();

    assert!(error.starts_with("invalid namespace \"Team_A\""), "{error}");
    assert!(
        error.contains("the value came from secrets.provider.namespace"),
        "{error}"
    );
}

#[test]
fn name_mapping_cases() {
    let cases = [
        (
            "/collate/hybrid-ingestion/MySQL/password",
            "collate-hybrid-ingestion-mysql-password",
        ),
        ("/a/b c/d_e", "a-b-c-d-e"),
        ("/a//b--c__d", "a-b-c-d"),
        ("/team/db.prod/password", "team-db.prod-password"),
        ("/x/.hidden", "x-hidden"),
        ("/x/a..b", "x-a.b"),
        ("/x/a.-b", "x-a-b"),
        ("/x/Ünïcode/pw", "x-n-code-pw"),
        ("/-lead/trail-", "lead-trail"),
        ("/9/8", "9-8"),
    ];
    for (path, expected) in cases {
        assert_eq!(secret_name(path).as_deref(), Ok(expected), "{path}");
        assert!(is_dns1123_subdomain(expected), "{expected}");
    }
}

#[test]
fn name_mapping_rejects_empty() {
    let error = secret_name("/_/-/.").unwrap_err();

    assert!(error.contains("no letters or digits"), "{error}");
}

#[test]
fn name_mapping_length_limit() {
    let longest = format!("/{}", "a".repeat(253));
    let too_long = format!("/{}", "a".repeat(254));

    assert_eq!(secret_name(&longest).map(|name| name.len()), Ok(253));
    let error = secret_name(&too_long).unwrap_err();
    assert!(error.contains("254 characters"), "{error}");
    assert!(error.contains("253 allowed"), "{error}");
}

#[tokio::test]
async fn map_name_uses_path_only() {
    let (_fake, provider, _dir) = start(mysql_api(), None, in_namespace("ingestion")).await;

    let name = provider
        .map_name(&reference(
            "secret:/collate/hybrid-ingestion/MySQL/password#2",
        ))
        .unwrap();

    assert_eq!(name, MYSQL_NAME);
}

#[test]
fn source_selection_order() {
    let file = KubernetesSettings {
        kubeconfig: Some(PathBuf::from("/etc/runner/kubeconfig")),
        ..KubernetesSettings::default()
    };
    let context_only = KubernetesSettings {
        context: Some("prod".to_string()),
        ..KubernetesSettings::default()
    };
    let nothing = KubernetesSettings::default();
    let file_source = ConfigSource::KubeconfigFile(PathBuf::from("/etc/runner/kubeconfig"));
    let not_asked =
        || -> bool { panic!("the in-cluster check ran although a kubeconfig or context is set") };

    assert_eq!(choose_source(&file, not_asked), file_source);
    assert_eq!(
        choose_source(&context_only, not_asked),
        ConfigSource::DefaultKubeconfig
    );
    assert_eq!(choose_source(&nothing, || true), ConfigSource::InCluster);
    assert_eq!(
        choose_source(&nothing, || false),
        ConfigSource::DefaultKubeconfig
    );
}

fn read_settings(yaml: &str) -> (KubernetesSettings, Issues) {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let mut issues = Issues::default();
    let mut section = Section::new(
        Some(&value),
        "secrets.provider",
        Path::new("/etc/hybrid-runner"),
        &mut issues,
    );
    let settings = KubernetesSettings::read(&mut section, &mut issues);
    (settings, issues)
}

#[test]
fn settings_read_all_keys() {
    let (settings, issues) = read_settings(
        "namespace: ingestion\nkubeconfig: kube/config\ncontext: prod\nkey: password\n",
    );

    assert!(issues.0.is_empty(), "{:?}", issues.0);
    assert_eq!(
        settings,
        KubernetesSettings {
            namespace: Some("ingestion".to_string()),
            kubeconfig: Some(PathBuf::from("/etc/hybrid-runner/kube/config")),
            context: Some("prod".to_string()),
            key: "password".to_string(),
        }
    );
}

#[test]
fn settings_defaults() {
    let (settings, issues) = read_settings("{}\n");

    assert!(issues.0.is_empty(), "{:?}", issues.0);
    assert_eq!(settings, KubernetesSettings::default());
    assert_eq!(settings.key, "value");
}

#[test]
fn settings_invalid_values_reported() {
    let (_settings, issues) =
        read_settings("namespace: Team_A\nkubeconfig: \"\"\ncontext: \"\"\nkey: \"my key\"\n");

    let paths: Vec<&str> = issues.0.iter().map(|issue| issue.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "secrets.provider.namespace",
            "secrets.provider.kubeconfig",
            "secrets.provider.context",
            "secrets.provider.key",
        ]
    );
    assert!(issues.0[0].message.contains("invalid namespace \"Team_A\""));
    assert!(issues.0[2].message.contains("remove the key"));
    assert!(
        issues.0[3]
            .message
            .contains("invalid Secret data key \"my key\"")
    );
}
