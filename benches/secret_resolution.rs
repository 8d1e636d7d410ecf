//! Secret resolution: a workflow with 100 distinct references, resolved by
//! the runner against the way OpenMetadata's Python ingestion resolves them
//! (one boto3 `get_secret_value` per field, in sequence), in one run.
//!
//! Both clients talk to a real moto server. On loopback moto itself is the
//! bottleneck, so the main figure goes through a proxy that delays every
//! request by 20 ms, a typical in-region round trip. The plain loopback
//! figure and the cost of a cached lookup are reported too. The runner's
//! resolvers write the audit log as a runner does by default (`fsync:
//! interval`); cached lookups are also measured without it and with `fsync:
//! always`.
//!
//! Run with `cargo bench --bench secret_resolution`. It needs `moto_server`
//! and `python3` with boto3 (both in the `.venv` that `.ci/test` creates);
//! `MOTO_SERVER` and `HYBRID_RUNNER_PYTHON` override their paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use hybrid_runner::redact::Redactor;
use hybrid_runner::secrets::audit::{AuditLog, AuditSettings, Fsync};
use hybrid_runner::secrets::aws::AwsProvider;
use hybrid_runner::secrets::{AccessPolicy, Resolver, ResolverSettings, SecretRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFIX: &str = "/collate/hybrid-ingestion/bench/field-";
const ROUND_TRIP: Duration = Duration::from_millis(20);

/// Sample sizes: the full benchmark, or a smoke test under `cargo test`.
#[derive(Clone, Copy)]
struct Size {
    count: usize,
    repeats: usize,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs a small
    // smoke test instead.
    let size = if std::env::args().any(|arg| arg == "--bench") {
        Size {
            count: 100,
            repeats: 5,
        }
    } else {
        Size {
            count: 10,
            repeats: 1,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(size));
}

async fn bench(size: Size) {
    let moto_port = free_port();
    let mut moto = tokio::process::Command::new(tool("MOTO_SERVER", "moto_server"))
        .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server starts (install with: pip install 'moto[server]')");
    wait_listening(moto_port).await;
    let direct = format!("http://127.0.0.1:{moto_port}");
    create_secrets(&direct, size.count).await;
    let proxied = format!("http://127.0.0.1:{}", start_delay_proxy(moto_port).await);

    println!(
        "{} distinct references, median of {} rounds",
        size.count, size.repeats
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "path", "runner", "boto3 seq.", "ratio"
    );
    for (label, endpoint) in [
        ("proxy, +20 ms per request", &proxied),
        ("loopback", &direct),
    ] {
        let runner = median(runner_rounds(endpoint, size).await);
        let python = median(python_rounds(endpoint, size).await);
        println!(
            "{label:<28} {:>9.1} ms {:>9.1} ms {:>7.1}x",
            millis(runner),
            millis(python),
            python.as_secs_f64() / runner.as_secs_f64()
        );
    }
    let audit_dir = tempfile::tempdir().expect("temp dir");
    for (label, audit) in [
        ("no audit log", None),
        ("audit fsync interval", Some(Fsync::Interval)),
        ("audit fsync always", Some(Fsync::Always)),
    ] {
        let resolver = resolver_with(&direct, cache_settings(), audit, audit_dir.path());
        let lookups = if audit == Some(Fsync::Always) {
            200
        } else {
            10_000
        };
        println!(
            "cached lookup, {label:<21} {:>9.2} us",
            cached_lookup_micros(&resolver, lookups).await
        );
    }
    let _ = moto.kill().await;
}

fn tool(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto_server did not listen on port {port} within 10 s");
}

fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "static",
            )),
        )
        .build()
}

async fn create_secrets(endpoint: &str, count: usize) {
    let client = aws_sdk_secretsmanager::Client::new(&sdk_config(endpoint));
    for index in 0..count {
        client
            .create_secret()
            .name(format!("{PREFIX}{index}"))
            .secret_string(format!("bench-value-{index:04}-xyz"))
            .send()
            .await
            .expect("create secret in moto");
    }
}

/// Starts a TCP proxy to moto that adds [`ROUND_TRIP`] to every request: the
/// first chunk of a request waits, and the rest of it (clients may write the
/// headers and the body separately) follows without more delay. A chunk
/// starts a new request when a response was sent since the last one.
/// Returns its port.
async fn start_delay_proxy(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(proxy_connection(client, upstream));
        }
    });
    port
}

async fn proxy_connection(client: TcpStream, upstream: u16) {
    use std::sync::atomic::{AtomicBool, Ordering};

    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let new_request = Arc::new(AtomicBool::new(true));
    let responded = Arc::clone(&new_request);
    let requests = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read) = client_read.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            if new_request.swap(false, Ordering::SeqCst) {
                tokio::time::sleep(ROUND_TRIP).await;
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = server_read.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        responded.store(true, Ordering::SeqCst);
        if client_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    requests.abort();
}

fn references(count: usize) -> BTreeSet<SecretRef> {
    (0..count)
        .map(|index| SecretRef::parse(&format!("secret:{PREFIX}{index}")).expect("reference"))
        .collect()
}

/// Returns a resolver with the audit log a runner writes by default, in a
/// folder that lives as long as the process.
fn resolver(endpoint: &str, settings: ResolverSettings) -> Resolver {
    static AUDIT_DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = AUDIT_DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    resolver_with(endpoint, settings, Some(Fsync::Interval), dir.path())
}

fn resolver_with(
    endpoint: &str,
    settings: ResolverSettings,
    audit: Option<Fsync>,
    audit_dir: &Path,
) -> Resolver {
    let provider = AwsProvider::from_sdk_config(&sdk_config(endpoint));
    let resolver = Resolver::new(
        Arc::new(provider),
        AccessPolicy::new(vec!["/collate/hybrid-ingestion/".into()]),
        Arc::new(Redactor::default()),
        settings,
    );
    if let Some(fsync) = audit {
        let log = AuditLog::open(AuditSettings {
            path: audit_dir.join(format!("audit-{fsync:?}.jsonl")),
            max_bytes: 64 * 1024 * 1024,
            keep: 1,
            fsync,
        })
        .expect("audit log");
        resolver.set_audit(log);
    }
    resolver
}

fn cache_settings() -> ResolverSettings {
    ResolverSettings {
        cache_ttl: Some(Duration::from_secs(3600)),
        ..ResolverSettings::default()
    }
}

async fn runner_rounds(endpoint: &str, size: Size) -> Vec<Duration> {
    let references = references(size.count);
    let mut rounds = Vec::with_capacity(size.repeats);
    for _ in 0..size.repeats {
        // A new resolver per round: a run starts with no pooled connections warm
        // beyond what the first lookups open, like a runner after idle time.
        let resolver = resolver(endpoint, ResolverSettings::default());
        let started = Instant::now();
        let values = resolver
            .resolve_all(&references, &hybrid_runner::secrets::Scope::default())
            .await
            .expect("resolve all");
        rounds.push(started.elapsed());
        assert_eq!(values.len(), size.count);
    }
    rounds
}

async fn python_rounds(endpoint: &str, size: Size) -> Vec<Duration> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/boto3_sequential.py");
    let mut rounds = Vec::with_capacity(size.repeats);
    for _ in 0..size.repeats {
        let output = tokio::process::Command::new(tool("HYBRID_RUNNER_PYTHON", "python3"))
            .arg(&script)
            .args([endpoint, PREFIX, &size.count.to_string()])
            .output()
            .await
            .expect("python3 with boto3 runs");
        assert!(
            output.status.success(),
            "boto3 script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seconds: f64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("seconds");
        rounds.push(Duration::from_secs_f64(seconds));
    }
    rounds
}

async fn cached_lookup_micros(resolver: &Resolver, lookups: usize) -> f64 {
    let reference = SecretRef::parse(&format!("secret:{PREFIX}0")).expect("reference");
    resolver.resolve(&reference).await.expect("first lookup");
    let started = Instant::now();
    for _ in 0..lookups {
        resolver.resolve(&reference).await.expect("cached lookup");
    }
    started.elapsed().as_secs_f64() * 1e6 / lookups as f64
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
