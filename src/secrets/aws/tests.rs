use std::path::Path;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_secretsmanager::error::ErrorMetadata;
use aws_sdk_secretsmanager::primitives::Blob;

use super::*;
use crate::secrets::emulators::{EmulatorProcess, MOTO};

/// Builds an SDK config with static credentials, so no test reaches the
/// default credential chain or instance metadata.
fn sdk_config(endpoint_url: &str) -> SdkConfig {
    let credentials = Credentials::new("test", "test", None, None, "static");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint_url)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .retry_config(RetryConfig::disabled())
        .build()
}

/// Starts moto and returns the provider under test plus a client that
/// creates the test secrets.
async fn moto() -> (EmulatorProcess, AwsProvider, Client) {
    let server = EmulatorProcess::start(&MOTO, &[]).await;
    let config = sdk_config(&server.url());
    let provider = AwsProvider::from_sdk_config(&config);
    let admin = Client::new(&config);
    (server, provider, admin)
}

/// Creates a secret with a string value and returns its version id.
async fn create(admin: &Client, name: &str, value: &str) -> String {
    let output = admin
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("CreateSecret");
    output
        .version_id()
        .expect("CreateSecret version id")
        .to_string()
}

/// Adds a new current version and returns its version id.
async fn put(admin: &Client, name: &str, value: &str) -> String {
    let output = admin
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .expect("PutSecretValue");
    output
        .version_id()
        .expect("PutSecretValue version id")
        .to_string()
}

fn reference(text: &str) -> SecretRef {
    SecretRef::parse(text).expect("valid reference")
}

#[tokio::test]
async fn current_value_is_fetched() {
    let (_server, provider, admin) = moto().await;
    let name = "/collate/hybrid-ingestion/mysql/password";
    create(&admin, name, "Mysql-Pa55!word").await;

    let mapped = provider
        .map_name(&reference(
            "secret:/collate/hybrid-ingestion/mysql/password",
        ))
        .expect("map_name");
    assert_eq!(mapped, name);
    let value = provider.fetch(&mapped, None).await.expect("fetch");
    assert_eq!(value.expose(), "Mysql-Pa55!word");
}

#[tokio::test]
async fn pinned_version_id_is_fetched() {
    let (_server, provider, admin) = moto().await;
    let name = "/collate/hybrid-ingestion/pg/password";
    let first = create(&admin, name, "first-value").await;
    let second = put(&admin, name, "second-value").await;

    let old = provider.fetch(name, Some(&first)).await.expect("first");
    assert_eq!(old.expose(), "first-value");
    let new = provider.fetch(name, Some(&second)).await.expect("second");
    assert_eq!(new.expose(), "second-value");
    let current = provider.fetch(name, None).await.expect("current");
    assert_eq!(current.expose(), "second-value");
}

#[tokio::test]
async fn previous_stage_is_fetched() {
    let (_server, provider, admin) = moto().await;
    let name = "/collate/hybrid-ingestion/pg/password";
    create(&admin, name, "first-value").await;
    put(&admin, name, "second-value").await;

    let previous = provider.fetch(name, Some("AWSPREVIOUS")).await;
    assert_eq!(previous.expect("AWSPREVIOUS").expose(), "first-value");
    let current = provider.fetch(name, Some("AWSCURRENT")).await;
    assert_eq!(current.expect("AWSCURRENT").expose(), "second-value");
    let unknown = provider.fetch(name, Some("NO-SUCH-STAGE")).await;
    assert_eq!(unknown.unwrap_err(), FetchError::NotFound);
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    let (_server, provider, _admin) = moto().await;
    let result = provider
        .fetch("/collate/hybrid-ingestion/missing", None)
        .await;
    assert_eq!(result.unwrap_err(), FetchError::NotFound);
}

#[tokio::test]
async fn deleted_secret_is_disabled() {
    let (_server, provider, admin) = moto().await;
    let name = "/collate/hybrid-ingestion/old/password";
    create(&admin, name, "deleted-value").await;
    admin
        .delete_secret()
        .secret_id(name)
        .recovery_window_in_days(7)
        .send()
        .await
        .expect("DeleteSecret");

    let error = provider.fetch(name, None).await.unwrap_err();
    let FetchError::Disabled(detail) = error else {
        panic!("expected Disabled, got {error:?}");
    };
    assert!(detail.contains("InvalidRequestException"), "{detail}");
    assert!(!detail.contains("deleted-value"), "{detail}");
}

#[tokio::test]
async fn binary_secret_is_rejected() {
    let (_server, provider, admin) = moto().await;
    let name = "/collate/hybrid-ingestion/cert/key";
    admin
        .create_secret()
        .name(name)
        .secret_binary(Blob::new(b"binary-secret-bytes".to_vec()))
        .send()
        .await
        .expect("CreateSecret");

    let error = provider.fetch(name, None).await.unwrap_err();
    let FetchError::Other(detail) = error else {
        panic!("expected Other, got {error:?}");
    };
    assert!(detail.contains("is a binary secret"), "{detail}");
    assert!(detail.contains("SecretString"), "{detail}");
    assert!(!detail.contains("binary-secret-bytes"), "{detail}");
}

#[tokio::test]
async fn name_with_dots_is_kept() {
    let (_server, provider, admin) = moto().await;
    let name = "/collate/hybrid-ingestion/my.db/pass.word";
    create(&admin, name, "dotted-value").await;

    let mapped = provider
        .map_name(&reference(
            "secret:/collate/hybrid-ingestion/my.db/pass.word",
        ))
        .expect("map_name");
    assert_eq!(mapped, name);
    let value = provider.fetch(&mapped, None).await.expect("fetch");
    assert_eq!(value.expose(), "dotted-value");
}

#[tokio::test]
async fn name_with_space_is_rejected() {
    let (_server, provider, _admin) = moto().await;
    let error = provider
        .map_name(&reference(
            "secret:/collate/hybrid-ingestion/my db/pass.word",
        ))
        .expect_err("a space is not valid in an AWS secret name");
    assert!(error.contains("[' ']"), "{error}");
}

#[tokio::test]
async fn closed_port_is_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let provider = AwsProvider::from_sdk_config(&sdk_config(&format!("http://127.0.0.1:{port}")));

    let error = provider.fetch("/collate/hybrid-ingestion/x", None).await;
    assert!(
        matches!(error, Err(FetchError::Network(_))),
        "expected Network, got {error:?}"
    );
}

#[test]
fn version_shape_selects_id_or_stage() {
    let cases = [
        ("a1b2c3d4-5678-90ab-cdef-1234567890ab", true),
        ("A1B2C3D4-5678-90AB-CDEF-1234567890AB", true),
        ("AWSPREVIOUS", false),
        ("AWSCURRENT", false),
        ("a1b2c3d4567890abcdef1234567890ab", false),
        ("a1b2c3d4-5678-90ab-cdef-1234567890ag", false),
        ("a1b2c3d4-5678-90ab-cdef-1234567890ab-1", false),
    ];
    for (version, expected) in cases {
        assert_eq!(is_uuid(version), expected, "{version}");
    }
}

fn service_error(code: &str, message: &str) -> GetSecretValueError {
    GetSecretValueError::generic(ErrorMetadata::builder().code(code).message(message).build())
}

#[test]
fn error_codes_map_to_kinds() {
    let denied = map_service_error(
        &service_error("AccessDeniedException", "not authorized"),
        400,
        None,
    );
    assert_eq!(
        denied,
        FetchError::AccessDenied("AccessDeniedException: not authorized".into())
    );

    let throttled = map_service_error(
        &service_error("ThrottlingException", "Rate exceeded"),
        400,
        Some(Duration::from_secs(2)),
    );
    assert_eq!(
        throttled,
        FetchError::Throttled {
            retry_after: Some(Duration::from_secs(2))
        }
    );

    let too_many = map_service_error(&service_error("TooManyRequests", ""), 429, None);
    assert_eq!(too_many, FetchError::Throttled { retry_after: None });

    let internal = map_service_error(&service_error("InternalServiceError", "oops"), 500, None);
    assert!(
        matches!(internal, FetchError::Unavailable(_)),
        "{internal:?}"
    );

    let gateway = map_service_error(&service_error("BadGateway", ""), 502, None);
    assert!(matches!(gateway, FetchError::Unavailable(_)), "{gateway:?}");

    let forbidden = map_service_error(&service_error("Forbidden", ""), 403, None);
    assert!(
        matches!(forbidden, FetchError::AccessDenied(_)),
        "{forbidden:?}"
    );
}

#[test]
fn invalid_request_maps_by_message() {
    let deletion = map_service_error(
        &service_error(
            "InvalidRequestException",
            "You can't perform this operation on the secret because it was marked for deletion.",
        ),
        400,
        None,
    );
    assert!(matches!(deletion, FetchError::Disabled(_)), "{deletion:?}");

    let other_request = map_service_error(
        &service_error("InvalidRequestException", "The secret is managed by RDS."),
        400,
        None,
    );
    assert!(
        matches!(other_request, FetchError::Other(_)),
        "{other_request:?}"
    );

    let bad_name = map_service_error(
        &service_error("InvalidParameterException", "Invalid name."),
        400,
        None,
    );
    assert!(
        matches!(bad_name, FetchError::InvalidName(_)),
        "{bad_name:?}"
    );

    let bad_version = map_service_error(
        &service_error("InvalidParameterException", "Invalid VersionId."),
        400,
        None,
    );
    assert!(
        matches!(bad_version, FetchError::Other(_)),
        "{bad_version:?}"
    );
}

#[test]
fn retry_after_seconds_are_parsed() {
    assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
    assert_eq!(parse_retry_after(" 10 "), Some(Duration::from_secs(10)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
}

#[test]
fn settings_are_read_from_section() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(
        "type: aws\nregion: eu-west-1\nendpoint_url: http://127.0.0.1:4566\nprofile: ''\n",
    )
    .expect("YAML");
    let mut issues = Issues::default();
    let mut section = Section::new(Some(&yaml), "secrets.provider", Path::new("."), &mut issues);
    section.string("type", &mut issues);

    let settings = AwsSettings::read(&mut section, &mut issues);
    section.finish(&mut issues);

    assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        settings.endpoint_url.as_deref(),
        Some("http://127.0.0.1:4566")
    );
    assert_eq!(settings.profile, None);
    assert_eq!(issues.0.len(), 1, "{:?}", issues.0);
    assert_eq!(issues.0[0].path, "secrets.provider.profile");
}
