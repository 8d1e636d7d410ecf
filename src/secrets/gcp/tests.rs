use std::path::Path;

use base64::Engine as _;
use google_cloud_secretmanager_v1::model::SecretPayload;

use super::*;
use crate::secrets::emulators::{DRONGO, EmulatorProcess};

const PROJECT: &str = "test-project";

/// A running drongo server plus a plain HTTP client that creates secrets
/// through its REST API.
struct Drongo {
    server: EmulatorProcess,
    http: reqwest::Client,
}

impl Drongo {
    async fn start() -> Drongo {
        Drongo {
            server: EmulatorProcess::start(&DRONGO, &[]).await,
            http: reqwest::Client::new(),
        }
    }

    fn settings(&self) -> GcpSettings {
        GcpSettings {
            project: Some(PROJECT.into()),
            endpoint: Some(self.server.url()),
            anonymous: true,
        }
    }

    async fn provider(&self) -> GcpProvider {
        GcpProvider::new(&self.settings()).await.expect("provider")
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/v1/{path}", self.server.url());
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("drongo request");
        let status = response.status();
        let text = response.text().await.expect("drongo response");
        assert!(status.is_success(), "POST {url}: {status} {text}");
        serde_json::from_str(&text).expect("drongo JSON")
    }

    async fn create_secret(&self, project: &str, id: &str) {
        let path = format!("projects/{project}/secrets?secretId={id}");
        let body = serde_json::json!({"replication": {"automatic": {}}});
        self.post(&path, body).await;
    }

    /// Adds a version and returns its resource name.
    async fn add_version(&self, project: &str, id: &str, data: &[u8]) -> String {
        let path = format!("projects/{project}/secrets/{id}:addVersion");
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        let body = serde_json::json!({"payload": {"data": encoded}});
        let version = self.post(&path, body).await;
        version["name"].as_str().expect("version name").to_string()
    }

    async fn set_state(&self, version_name: &str, action: &str) {
        self.post(&format!("{version_name}:{action}"), serde_json::json!({}))
            .await;
    }
}

fn reference(text: &str) -> SecretRef {
    SecretRef::parse(text).expect("valid reference")
}

#[tokio::test]
async fn latest_version_is_fetched() {
    let drongo = Drongo::start().await;
    let id = "collate_hybrid-ingestion_my_db_pass_word";
    drongo.create_secret(PROJECT, id).await;
    drongo.add_version(PROJECT, id, b"first-value").await;
    drongo.add_version(PROJECT, id, b"second-value").await;
    let provider = drongo.provider().await;

    let name = provider
        .map_name(&reference(
            "secret:/collate/hybrid-ingestion/my.db/pass word",
        ))
        .expect("map_name");
    assert_eq!(name, format!("projects/{PROJECT}/secrets/{id}"));
    let value = provider.fetch(&name, None).await.expect("fetch");
    assert_eq!(value.expose(), "second-value");
}

#[tokio::test]
async fn pinned_version_is_fetched() {
    let drongo = Drongo::start().await;
    let id = "collate_hybrid-ingestion_pg_password";
    drongo.create_secret(PROJECT, id).await;
    drongo.add_version(PROJECT, id, b"first-value").await;
    drongo.add_version(PROJECT, id, b"second-value").await;
    let provider = drongo.provider().await;

    let pinned = reference("secret:/collate/hybrid-ingestion/pg/password#1");
    let name = provider.map_name(&pinned).expect("map_name");
    let value = provider
        .fetch(&name, pinned.version())
        .await
        .expect("fetch");
    assert_eq!(value.expose(), "first-value");

    let by_id = provider.fetch(id, Some("2")).await.expect("fetch by id");
    assert_eq!(by_id.expose(), "second-value");
}

#[tokio::test]
async fn disabled_version_is_disabled() {
    let drongo = Drongo::start().await;
    let id = "collate_hybrid-ingestion_pg_password";
    drongo.create_secret(PROJECT, id).await;
    let first = drongo.add_version(PROJECT, id, b"first-value").await;
    let second = drongo.add_version(PROJECT, id, b"second-value").await;
    drongo.set_state(&first, "disable").await;
    drongo.set_state(&second, "destroy").await;
    let provider = drongo.provider().await;

    for version in ["1", "2"] {
        let error = provider.fetch(id, Some(version)).await.unwrap_err();
        let FetchError::Disabled(detail) = error else {
            panic!("version {version}: expected Disabled, got {error:?}");
        };
        assert!(detail.starts_with("FAILED_PRECONDITION"), "{detail}");
        assert!(!detail.contains("-value"), "{detail}");
    }
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    let drongo = Drongo::start().await;
    let provider = drongo.provider().await;
    let missing = provider
        .fetch("collate_hybrid-ingestion_missing", None)
        .await;
    assert_eq!(missing.unwrap_err(), FetchError::NotFound);

    let id = "collate_hybrid-ingestion_one_version";
    drongo.create_secret(PROJECT, id).await;
    drongo.add_version(PROJECT, id, b"only-value").await;
    let missing_version = provider.fetch(id, Some("9")).await;
    assert_eq!(missing_version.unwrap_err(), FetchError::NotFound);
}

#[tokio::test]
async fn full_resource_name_is_used() {
    let drongo = Drongo::start().await;
    drongo.create_secret("other-project", "db-pass").await;
    drongo
        .add_version("other-project", "db-pass", b"other-value")
        .await;
    let provider = drongo.provider().await;

    for (text, version) in [
        ("secret:/projects/other-project/secrets/db-pass", None),
        (
            "secret:/projects/other-project/secrets/db-pass#1",
            Some("1"),
        ),
        (
            "secret:/projects/other-project/secrets/db-pass/versions/1",
            None,
        ),
    ] {
        let parsed = reference(text);
        let name = provider.map_name(&parsed).expect("map_name");
        assert!(
            name.starts_with("projects/other-project/secrets/db-pass"),
            "{name}"
        );
        assert_eq!(parsed.version(), version);
        let value = provider.fetch(&name, parsed.version()).await.expect(text);
        assert_eq!(value.expose(), "other-value", "{text}");
    }
}

#[tokio::test]
async fn non_utf8_payload_is_rejected() {
    let drongo = Drongo::start().await;
    let id = "collate_hybrid-ingestion_cert";
    drongo.create_secret(PROJECT, id).await;
    drongo.add_version(PROJECT, id, &[0xff, 0xfe, 0x00]).await;
    let provider = drongo.provider().await;

    let error = provider.fetch(id, None).await.unwrap_err();
    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(detail.contains("not valid UTF-8"), "{detail}");
}

#[tokio::test]
async fn missing_project_fails_at_startup() {
    let settings = GcpSettings {
        project: None,
        endpoint: Some("http://127.0.0.1:9".into()),
        anonymous: true,
    };
    let error = GcpProvider::with_env_project(&settings, None)
        .await
        .err()
        .expect("startup error");
    assert!(error.contains("secrets.provider.project"), "{error}");
    assert!(error.contains("GOOGLE_CLOUD_PROJECT"), "{error}");

    let blank = GcpProvider::with_env_project(&settings, Some("  ".into())).await;
    assert!(
        blank.is_err(),
        "a blank GOOGLE_CLOUD_PROJECT must not count"
    );
}

#[tokio::test]
async fn project_comes_from_environment_value() {
    let mut settings = GcpSettings {
        project: None,
        endpoint: Some("http://127.0.0.1:9".into()),
        anonymous: true,
    };
    let from_env = GcpProvider::with_env_project(&settings, Some("env-project".into()))
        .await
        .expect("provider");
    assert_eq!(from_env.project(), "env-project");

    settings.project = Some("config-project".into());
    let from_config = GcpProvider::with_env_project(&settings, Some("env-project".into()))
        .await
        .expect("provider");
    assert_eq!(from_config.project(), "config-project");
}

#[tokio::test]
async fn closed_port_is_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let settings = GcpSettings {
        project: Some(PROJECT.into()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        anonymous: true,
    };
    let provider = GcpProvider::new(&settings).await.expect("provider");

    let error = provider.fetch("collate_x", None).await;
    assert!(
        matches!(error, Err(FetchError::Network(_))),
        "expected Network, got {error:?}"
    );
}

#[test]
fn path_maps_to_secret_id() {
    let cases = [
        (
            "/collate/hybrid-ingestion/my.db/pass word",
            "collate_hybrid-ingestion_my_db_pass_word",
        ),
        (
            "/collate/hybrid-ingestion/mysql/password",
            "collate_hybrid-ingestion_mysql_password",
        ),
        ("/a/b_c/d-e", "a_b_c_d-e"),
        ("/naïve/ü", "na_ve__"),
    ];
    for (path, expected) in cases {
        assert_eq!(secret_id(path).as_deref(), Ok(expected), "{path}");
    }
}

#[test]
fn secret_id_length_is_limited() {
    let longest = format!("/{}", "a".repeat(MAX_SECRET_ID_LEN));
    assert_eq!(
        secret_id(&longest).map(|id| id.len()),
        Ok(MAX_SECRET_ID_LEN)
    );

    let too_long = format!("/{}", "a".repeat(MAX_SECRET_ID_LEN + 1));
    let error = secret_id(&too_long).unwrap_err();
    assert!(error.contains("256 characters long"), "{error}");
    assert!(error.contains("map_secret"), "{error}");
}

#[test]
fn resource_names_are_recognised() {
    assert_eq!(
        resource_name("/projects/p1/secrets/s-1"),
        Ok(Some("projects/p1/secrets/s-1".to_string()))
    );
    assert_eq!(
        resource_name("/projects/p1/secrets/s_1/versions/latest"),
        Ok(Some("projects/p1/secrets/s_1/versions/latest".to_string()))
    );
    assert_eq!(resource_name("/projects/p1/db"), Ok(None));
    assert_eq!(resource_name("/projects/p1/secrets/s/other/1"), Ok(None));

    let error = resource_name("/projects/p1/secrets/my.secret").unwrap_err();
    assert!(error.contains("\"my.secret\""), "{error}");
}

#[tokio::test]
async fn version_named_twice_is_rejected() {
    let settings = GcpSettings {
        project: Some(PROJECT.into()),
        endpoint: Some("http://127.0.0.1:9".into()),
        anonymous: true,
    };
    let provider = GcpProvider::new(&settings).await.expect("provider");
    let twice = reference("secret:/projects/p1/secrets/s/versions/1#2");

    let error = provider.map_name(&twice).unwrap_err();
    assert!(error.contains("names a version in its path"), "{error}");
    let fetched = provider
        .fetch("projects/p1/secrets/s/versions/1", Some("2"))
        .await;
    assert!(
        matches!(fetched, Err(FetchError::InvalidName(_))),
        "{fetched:?}"
    );
}

#[test]
fn crc32c_known_vector_is_checked() {
    // CRC-32C check value from RFC 3720 (iSCSI), appendix B.4.
    let data = b"123456789";
    let name = "projects/p/secrets/s/versions/1";
    assert_eq!(crc32c::crc32c(data), 0xE306_9283);
    assert_eq!(verify_crc32c(name, data, Some(0xE306_9283)), Ok(()));
    assert_eq!(verify_crc32c(name, data, None), Ok(()));

    let error = verify_crc32c(name, data, Some(0xE306_9284)).unwrap_err();
    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(detail.starts_with("checksum mismatch"), "{detail}");
}

#[test]
fn checksum_mismatch_fails_decoding() {
    let response = AccessSecretVersionResponse::new()
        .set_name("projects/p/secrets/s/versions/1")
        .set_payload(
            SecretPayload::new()
                .set_data("payload-value")
                .set_data_crc32c(1),
        );
    let error = decode_payload("projects/p/secrets/s/versions/1", response).unwrap_err();
    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(detail.starts_with("checksum mismatch"), "{detail}");
    assert!(
        detail.contains("projects/p/secrets/s/versions/1"),
        "{detail}"
    );
    assert!(!detail.contains("payload-value"), "{detail}");

    let data = b"payload-value";
    let matching = AccessSecretVersionResponse::new().set_payload(
        SecretPayload::new()
            .set_data(data.to_vec())
            .set_data_crc32c(i64::from(crc32c::crc32c(data))),
    );
    let value = decode_payload("projects/p/secrets/s/versions/1", matching).expect("decode");
    assert_eq!(value.expose(), "payload-value");
}

#[test]
fn status_codes_map_to_kinds() {
    let detail = || "detail".to_string();
    assert_eq!(
        map_status_code(Code::NotFound, detail(), None),
        FetchError::NotFound
    );
    assert_eq!(
        map_status_code(Code::PermissionDenied, detail(), None),
        FetchError::AccessDenied("detail".into())
    );
    assert_eq!(
        map_status_code(
            Code::ResourceExhausted,
            detail(),
            Some(Duration::from_secs(5))
        ),
        FetchError::Throttled {
            retry_after: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(
        map_status_code(Code::FailedPrecondition, detail(), None),
        FetchError::Disabled("detail".into())
    );
    assert_eq!(
        map_status_code(Code::Unavailable, detail(), None),
        FetchError::Unavailable("detail".into())
    );
    assert_eq!(
        map_http_status(503, detail(), None),
        FetchError::Unavailable("detail".into())
    );
    assert_eq!(
        map_http_status(429, detail(), None),
        FetchError::Throttled { retry_after: None }
    );
}

#[test]
fn settings_are_read_from_section() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(
        "type: gcp\nproject: my-project\nendpoint: http://127.0.0.1:8085\nanonymous: yes\n",
    )
    .expect("YAML");
    let mut issues = Issues::default();
    let mut section = Section::new(Some(&yaml), "secrets.provider", Path::new("."), &mut issues);
    section.string("type", &mut issues);

    let settings = GcpSettings::read(&mut section, &mut issues);
    section.finish(&mut issues);

    assert_eq!(settings.project.as_deref(), Some("my-project"));
    assert_eq!(settings.endpoint.as_deref(), Some("http://127.0.0.1:8085"));
    assert!(!settings.anonymous);
    assert_eq!(issues.0.len(), 1, "{:?}", issues.0);
    assert_eq!(issues.0[0].path, "secrets.provider.anonymous");
}
