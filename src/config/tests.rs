use super::*;

fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let lookup = move |name: &str| {
        vars.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    Config::parse(
        text,
        Path::new("runner.yaml"),
        Path::new("/etc/hr"),
        &lookup,
    )
}

fn issues_of(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid { issues, .. }) => {
            issues.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected validation issues, got {other:?}"),
    }
}

const MINIMAL: &str = "
agent_id: runner-1
control_plane:
  url: wss://saas.example.com/agent/v1/connect
  token_file: token
secrets:
  provider:
    type: file
    path: secrets.yaml
";

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(config.agent_id, "runner-1");
    assert_eq!(
        config.control_plane.token,
        TokenSource::File("/etc/hr/token".into())
    );
    assert_eq!(config.runs.capacity, 4);
    assert_eq!(
        config.secrets.allowed_prefixes,
        vec![DEFAULT_ALLOWED_PREFIX]
    );
    assert_eq!(
        config.pipelines["metadata"].args,
        vec!["ingest", "-c", "{config}"]
    );
    assert_eq!(config.state_dir, PathBuf::from("/etc/hr/state"));
    assert_eq!(config.work_dir, PathBuf::from("/etc/hr/state/runs"));
}

#[test]
fn all_errors_reported_with_paths() {
    let text = "
agent_id: 'bad id!'
control_plane:
  url: http://example.com
  token_file: t
  token_env: T
  colour: blue
runs:
  capacity: 0
  cancel_grace: soon
pipelines:
  custom: ['run', '{password}']
secrets:
  allowed_prefixes: ['nope']
  provider: {type: vault}
extra: 1
";
    let issues = issues_of(parse(text, &[]));
    let expected = [
        "agent_id: invalid agent id",
        "control_plane.url: invalid URL",
        "control_plane.token_file: set either token_file or token_env",
        "control_plane.colour: unknown key",
        "runs.capacity: expected an integer from 1 to 10000, found 0",
        "runs.cancel_grace: invalid duration \"soon\"",
        "pipelines.custom: unknown placeholder {password}",
        "secrets.allowed_prefixes[0]: invalid prefix \"nope\"",
        "secrets.provider.type: unknown provider \"vault\"",
        "extra: unknown key",
    ];
    for start in expected {
        assert!(
            issues.iter().any(|issue| issue.starts_with(start)),
            "missing {start:?} in {issues:#?}"
        );
    }
    assert_eq!(issues.len(), expected.len(), "{issues:#?}");
}

#[test]
fn env_expansion_and_defaults() {
    let text = MINIMAL
        .replace("runner-1", "${AGENT:-fallback}")
        .replace("wss://saas.example.com", "wss://${HOST}");
    let config = parse(&text, &[("HOST", "cp.example.com")]).unwrap();
    assert_eq!(config.agent_id, "fallback");
    assert_eq!(
        config.control_plane.url,
        "wss://cp.example.com/agent/v1/connect"
    );
}

#[test]
fn unset_variable_is_reported() {
    let text = MINIMAL.replace("token_file: token", "token_file: ${TOKEN_DIR}/token");
    let issues = issues_of(parse(&text, &[]));
    assert_eq!(
        issues,
        vec![
            "control_plane.token_file: environment variable TOKEN_DIR is not set; set it or write ${TOKEN_DIR:-default}"
        ]
    );
}

#[test]
fn literal_dollar_brace_is_kept() {
    let text = MINIMAL.replace("path: secrets.yaml", "path: 'a$${b}.yaml'");
    let config = parse(&text, &[]).unwrap();
    assert_eq!(
        config.secrets.providers["file"],
        ProviderConfig::File {
            path: "/etc/hr/a${b}.yaml".into()
        }
    );
}

#[test]
fn plain_ws_only_on_loopback() {
    let local = MINIMAL.replace("wss://saas.example.com", "ws://127.0.0.1:9000");
    assert!(parse(&local, &[]).is_ok());
    let remote = MINIMAL.replace("wss://saas.example.com", "ws://saas.example.com");
    let issues = issues_of(parse(&remote, &[]));
    assert!(issues[0].contains("use wss://"), "{issues:?}");
}

#[test]
fn pipeline_override_and_disable() {
    let text = format!(
        "{MINIMAL}pipelines:\n  metadata: /opt/bin/ingest --config {{config}}\n  usage: false\n  custom: [python3, run.py, '{{config}}']\n"
    );
    let config = parse(&text, &[]).unwrap();
    assert_eq!(config.pipelines["metadata"].program, "/opt/bin/ingest");
    assert!(!config.pipelines.contains_key("usage"));
    assert_eq!(config.pipelines["custom"].args, vec!["run.py", "{config}"]);
}

#[test]
fn missing_sections_are_named() {
    let issues = issues_of(parse("agent_id: a\n", &[]));
    assert!(
        issues
            .iter()
            .any(|issue| issue.starts_with("control_plane: missing required section"))
    );
    assert!(
        issues
            .iter()
            .any(|issue| issue.starts_with("secrets.provider: missing required section"))
    );
}

#[test]
fn doubled_braces_are_literal() {
    let text = format!(
        "{MINIMAL}pipelines:\n  custom: [sh, -c, 'echo $${{{{HOME}}}} {{{{x}}}}', '{{config}}']\n"
    );
    let config = parse(&text, &[]).unwrap();
    let (_, args) = config.pipelines["custom"].render(Path::new("/w/c.json"), Path::new("/w"));
    assert_eq!(args, vec!["-c", "echo ${HOME} {x}", "/w/c.json"]);
}

#[test]
fn comment_only_file_is_an_error() {
    // Found by the config loader property test: "# " parsed as null and was
    // reported as "0 problem(s)".
    let error = Config::parse(
        "# nothing here\n",
        Path::new("runner.yaml"),
        Path::new("/etc/hybrid-runner"),
        &|_| None,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("contains no settings"),
        "{error}"
    );
}

const TWO_STORES: &str = "
agent_id: runner-1
control_plane:
  url: wss://saas.example.com/agent/v1/connect
  token_file: token
secrets:
  allowed_prefixes:
    - /collate/hybrid-ingestion/{service}/
  providers:
    local: { type: file, path: secrets.yaml }
    vars: { type: env }
  routes:
    - { prefix: /collate/hybrid-ingestion/vars/, provider: vars }
  default_provider: local
  audit: { max_bytes: 65536, keep: 2, fsync: never }
";

#[test]
fn named_stores_and_routes_are_read() {
    let config = parse(TWO_STORES, &[]).unwrap();
    let secrets = &config.secrets;
    assert_eq!(
        secrets.providers.keys().collect::<Vec<_>>(),
        vec!["local", "vars"]
    );
    assert_eq!(
        secrets.routes,
        vec![crate::secrets::Route {
            prefix: "/collate/hybrid-ingestion/vars/".into(),
            provider: "vars".into(),
        }]
    );
    assert_eq!(secrets.default_provider, "local");
    assert!(!secrets.single_store);
    assert_eq!(
        secrets.audit,
        crate::secrets::audit::AuditSettings {
            path: "/etc/hr/state/audit.jsonl".into(),
            max_bytes: 65536,
            keep: 2,
            fsync: crate::secrets::audit::Fsync::Never,
        }
    );
}

#[test]
fn store_mistakes_are_named() {
    let text = TWO_STORES
        .replace("provider: vars }", "provider: vault }")
        .replace("default_provider: local", "default_provider: cloud")
        .replace("{service}", "svc-{service}");
    let issues = issues_of(parse(&text, &[]));
    assert_eq!(
        issues,
        vec![
            "secrets.allowed_prefixes[0]: invalid prefix \"/collate/hybrid-ingestion/svc-{service}/\": braces may only form a whole path segment {service} or {pipelineType}, as in \"/collate/hybrid-ingestion/{service}/\"",
            "secrets.routes[0].provider: unknown provider \"vault\"; configured providers: local, vars",
            "secrets.default_provider: unknown provider \"cloud\"; configured providers: local, vars",
        ]
    );
}

#[test]
fn several_stores_need_a_default() {
    let text = TWO_STORES.replace("  default_provider: local\n", "");
    let issues = issues_of(parse(&text, &[]));
    assert_eq!(
        issues,
        vec![
            "secrets.default_provider: missing: with several providers, name the one for references that match no route (local, vars)"
        ]
    );
}

#[test]
fn provider_and_providers_exclude_each_other() {
    let text = format!("{MINIMAL}  providers:\n    vars: {{ type: env }}\n");
    let issues = issues_of(parse(&text, &[]));
    assert_eq!(
        issues,
        vec![
            "secrets.provider: set either provider (one store) or providers with routes and default_provider (several stores), not both"
        ]
    );
}

#[test]
fn openmetadata_section_read() {
    assert!(parse(MINIMAL, &[]).unwrap().openmetadata.is_none());

    let text = format!(
        "{MINIMAL}openmetadata:\n  host_port: https://metadata.example.com/api\n  jwt_token_file: bot.jwt\n"
    );
    let settings = parse(&text, &[]).unwrap().openmetadata.unwrap();
    assert_eq!(settings.host_port, "https://metadata.example.com/api");
    assert_eq!(
        settings.jwt_token,
        Some(TokenSource::File("/etc/hr/bot.jwt".into()))
    );

    let text = format!("{MINIMAL}openmetadata:\n  host_port: http://127.0.0.1:8585/api\n");
    let settings = parse(&text, &[]).unwrap().openmetadata.unwrap();
    assert_eq!(settings.jwt_token, None, "the control plane token is used");
}

#[test]
fn openmetadata_section_invalid() {
    let text = format!(
        "{MINIMAL}openmetadata:\n  host_port: http://metadata.example.com/api\n  jwt_token_file: a\n  jwt_token_env: B\n  extra: 1\n"
    );
    let issues = issues_of(parse(&text, &[]));
    let expected = [
        "openmetadata.host_port: plain http:// is allowed only for loopback hosts",
        "openmetadata.jwt_token_file: set either jwt_token_file or jwt_token_env",
        "openmetadata.extra",
    ];
    for prefix in expected {
        assert!(
            issues.iter().any(|issue| issue.starts_with(prefix)),
            "no issue starting with {prefix:?} in {issues:?}"
        );
    }
    let missing = issues_of(parse(
        &format!("{MINIMAL}openmetadata:\n  jwt_token_env: B\n"),
        &[],
    ));
    assert!(
        missing
            .iter()
            .any(|issue| issue.starts_with("openmetadata.host_port")),
        "{missing:?}"
    );
}

#[test]
fn prechecks_are_read() {
    let text = format!(
        "{MINIMAL}
hooks:
  dir: hooks
prechecks_timezone: Europe/Paris
prechecks:
  - name: database
    schedule: '*/5 * * * *'
    hook: check_database
    timeout: 10s
    gate: true
    gates:
      pipeline_types: [metadata]
      services: [mysql_prod]
  - name: disk
    schedule: '@every 1m'
    hook: check_disk
"
    );
    let config = parse(&text, &[]).unwrap();
    assert_eq!(config.prechecks.zone, chrono_tz::Tz::Europe__Paris);
    let checks = &config.prechecks.checks;
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].name, "database");
    assert_eq!(checks[0].schedule.as_str(), "*/5 * * * *");
    assert_eq!(checks[0].timeout, Duration::from_secs(10));
    assert!(checks[0].gate);
    assert_eq!(checks[0].gates.pipeline_types, vec!["metadata"]);
    assert_eq!(checks[0].gates.services, vec!["mysql_prod"]);
    assert!(!checks[1].gate);
    assert_eq!(checks[1].timeout, crate::prechecks::DEFAULT_TIMEOUT);
    let hooks = config.hooks.unwrap();
    assert_eq!(hooks.limits.declared_checks.len(), 2);
    assert_eq!(hooks.limits.declared_checks[1].function, "check_disk");
    assert_eq!(hooks.limits.work_dir, Some(config.work_dir.clone()));
}

#[test]
fn precheck_errors_name_check_and_expression() {
    let text = format!(
        "{MINIMAL}
hooks:
  dir: hooks
prechecks_timezone: Mars/Olympus
prechecks:
  - name: database
    schedule: '61 * * * *'
    hook: check_database
  - name: database
    schedule: '@every 1m'
    hook: check-disk
    colour: blue
  - name: bad name
    schedule: '@every 1m'
    hook: ok
"
    );
    let issues = issues_of(parse(&text, &[]));
    let has = |needle: &str| issues.iter().any(|issue| issue.contains(needle));
    assert!(
        has("prechecks[0].schedule: pre-check database: invalid schedule \"61 * * * *\""),
        "{issues:?}"
    );
    assert!(
        has("prechecks[1].hook: \"check-disk\" is not a Lua function name"),
        "{issues:?}"
    );
    assert!(has("prechecks[1].colour"), "{issues:?}");
    assert!(
        has("prechecks[1].name: duplicate pre-check name"),
        "{issues:?}"
    );
    assert!(
        has("prechecks[2].name: invalid pre-check name"),
        "{issues:?}"
    );
    assert!(
        has("prechecks_timezone: unknown time zone \"Mars/Olympus\""),
        "{issues:?}"
    );
}

#[test]
fn prechecks_need_hooks() {
    let text = format!(
        "{MINIMAL}
prechecks:
  - name: disk
    schedule: '@every 1m'
    hook: check_disk
"
    );
    let issues = issues_of(parse(&text, &[]));
    assert!(
        issues
            .iter()
            .any(|issue| issue.starts_with("prechecks: pre-checks call hook functions")),
        "{issues:?}"
    );
}
