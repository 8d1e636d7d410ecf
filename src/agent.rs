//! The agent: wires config, redactor, secrets, dispatcher and session together
//! and runs until a signal stops it.
//!
//! Shutdown: the first SIGTERM or SIGINT stops new runs and lets active ones
//! finish for up to `runs.drain_timeout`, then cancels them. A second signal
//! cancels them at once. The outbox gets up to `runs.flush_timeout` to be
//! acknowledged before exit.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{Identity, Outbox, Session, StatusFn, StatusSource};
use crate::dispatch::Dispatcher;
use crate::redact::Redactor;

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create {path}: {source}")]
    Directory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use state file {path}: {source}; check state_dir and its permissions")]
    State {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load the hooks: {0}")]
    Hooks(#[from] crate::hooks::HookLoadError),
    #[error("cannot set up the secrets provider: {0}")]
    Secrets(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the agent until it is stopped by signals.
pub async fn run(config: Config, redactor: Arc<Redactor>) -> Result<(), AgentError> {
    for dir in [&config.state_dir, &config.work_dir] {
        create_private_dir(dir)?;
    }
    let config = Arc::new(config);
    let resolver = crate::secrets::resolver_from_config(&config.secrets, Arc::clone(&redactor))
        .await
        .map_err(AgentError::Secrets)?;
    let resolver = Arc::new(resolver);
    let provider = resolver.providers().summary();
    let journal = config.state_dir.join("outbox.jsonl");
    // Sequence numbers restart with a new journal, so the id must change too,
    // or the control plane would take the new messages for replays.
    let journal_existed = journal.exists();
    let outbox = Outbox::open(
        Arc::clone(&redactor),
        config.control_plane.outbox_max_bytes,
        &journal,
    )
    .map_err(|source| AgentError::State {
        path: journal.clone(),
        source,
    })?;
    let outbox = Arc::new(outbox);
    let instance_id = instance_id(&config.state_dir, journal_existed)?;
    let (registry, leftovers) = crate::dispatch::registry::Registry::open(&config.state_dir)
        .map_err(|source| AgentError::State {
            path: config.state_dir.join("active-runs.jsonl"),
            source,
        })?;
    let hooks = load_hooks(
        &config,
        HookServices {
            events: Some(event_sink(Arc::clone(&outbox))),
            secrets: Some(secret_lookup(Arc::clone(&resolver))),
            redactor: Some(crate::hooks::HookRedactor(Arc::clone(&redactor))),
        },
    )?;
    if let Some(hooks) = &hooks {
        resolver.set_mapper(Arc::clone(hooks) as Arc<dyn crate::secrets::NameMapper>);
    }
    let mut dispatcher = Dispatcher::new(
        Arc::clone(&config),
        resolver,
        Arc::clone(&redactor),
        Arc::clone(&outbox),
        registry,
    );
    if let Some(hooks) = &hooks {
        dispatcher = dispatcher.with_hooks(Arc::clone(hooks));
    }
    let prechecks = Arc::new(
        prechecks_service(&config, hooks.clone(), Arc::clone(&outbox))
            .with_changed(dispatcher.status_changed()),
    );
    let dispatcher = Arc::new(dispatcher.with_prechecks(Arc::clone(&prechecks)));
    dispatcher.recover(leftovers);

    let (inbound_tx, inbound_rx) = mpsc::channel(256);
    let status: StatusFn = {
        let dispatcher = Arc::clone(&dispatcher);
        Arc::new(move || dispatcher.status())
    };
    let identity = Identity {
        agent_id: config.agent_id.clone(),
        instance_id,
        pipeline_types: config.pipelines.keys().cloned().collect(),
    };
    let max_message_bytes = (config.runs.max_config_bytes * 2 + (1 << 20)).max(128 << 20);
    let session = Session::new(
        config.control_plane.clone(),
        identity,
        Arc::clone(&outbox),
        Arc::clone(&redactor),
        StatusSource {
            snapshot: status,
            changed: dispatcher.status_changed(),
        },
        inbound_tx,
        max_message_bytes,
    );

    tracing::info!(
        agent_id = %config.agent_id,
        version = crate::VERSION,
        url = %config.control_plane.url,
        capacity = config.runs.capacity,
        %provider,
        "hybrid-runner starting"
    );
    let session_stop = CancellationToken::new();
    if let (Some(hooks), Some(settings)) = (hooks, &config.hooks) {
        tokio::spawn(reload_hooks(
            hooks,
            Arc::clone(&outbox),
            settings.debounce,
            session_stop.clone(),
        ));
    }
    let session_task = tokio::spawn(session.run(session_stop.clone()));
    prechecks.start();
    let dispatch_task = tokio::spawn(Arc::clone(&dispatcher).serve(inbound_rx));

    wait_for_shutdown(&dispatcher, config.runs.drain_timeout).await?;

    prechecks.stop();
    flush_outbox(&outbox, config.runs.flush_timeout).await;
    session_stop.cancel();
    let _ = session_task.await;
    dispatch_task.abort();
    tracing::info!(unsent = outbox.pending(), "hybrid-runner stopped");
    Ok(())
}

/// Runner services available to the hooks' API.
#[derive(Default)]
pub(crate) struct HookServices {
    pub events: Option<crate::hooks::EventSink>,
    pub secrets: Option<crate::hooks::SecretLookup>,
    pub redactor: Option<crate::hooks::HookRedactor>,
}

/// Loads the hook scripts named in runner.yaml, if any. Events the hooks
/// send go to `events`.
pub(crate) fn load_hooks(
    config: &Config,
    services: HookServices,
) -> Result<Option<Arc<crate::hooks::HookSet>>, AgentError> {
    let Some(settings) = &config.hooks else {
        return Ok(None);
    };
    let limits = crate::hooks::HookLimits {
        events: services.events,
        secrets: services.secrets,
        redactor: services.redactor,
        ..settings.limits.clone()
    };
    let set = crate::hooks::HookSet::load(&settings.dir, limits)?;
    let current = set.current();
    tracing::info!(
        dir = %settings.dir.display(),
        generation = current.generation(),
        content_hash = %current.content_hash(),
        "hooks loaded"
    );
    Ok(Some(Arc::new(set)))
}

/// Returns the lookup behind `runner.secrets.get`: the resolver of runs, with
/// its policy, providers, audit log and redactor.
pub(crate) fn secret_lookup(resolver: Arc<crate::secrets::Resolver>) -> crate::hooks::SecretLookup {
    crate::hooks::SecretLookup(Arc::new(move |text: String, scope| {
        let resolver = Arc::clone(&resolver);
        Box::pin(async move {
            if !crate::secrets::SecretRef::is_reference(&text) {
                return Err(format!(
                    "{:?} is not a reference; write secret:/path",
                    text.chars().take(100).collect::<String>()
                ));
            }
            let reference =
                crate::secrets::SecretRef::parse(&text).map_err(|error| error.to_string())?;
            resolver
                .resolve_in(&reference, &scope)
                .await
                .map(|(value, _)| value.expose().to_string())
                .map_err(|error| error.to_string())
        })
    }))
}

/// Creates the pre-checks of runner.yaml; their results go to the control
/// plane through the outbox.
pub(crate) fn prechecks_service(
    config: &Config,
    hooks: Option<Arc<crate::hooks::HookSet>>,
    outbox: Arc<Outbox>,
) -> crate::prechecks::Prechecks {
    crate::prechecks::Prechecks::new(
        config.prechecks.checks.clone(),
        config.prechecks.zone,
        hooks,
        Arc::new(move |result| {
            outbox.push(result);
        }),
    )
}

/// Returns a sink that sends hook events to the control plane through the
/// outbox, which redacts them.
fn event_sink(outbox: Arc<Outbox>) -> crate::hooks::EventSink {
    crate::hooks::EventSink(Arc::new(move |kind, payload| {
        outbox.push(&crate::protocol::Event { kind, payload });
    }))
}

/// Reloads the hooks when their files change or on SIGHUP, and reports each
/// reload to the control plane. A failed reload keeps the last good
/// generation serving.
async fn reload_hooks(
    hooks: Arc<crate::hooks::HookSet>,
    outbox: Arc<Outbox>,
    debounce: Duration,
    stop: CancellationToken,
) {
    let (requests, mut requested) = mpsc::channel::<()>(1);
    let watcher = crate::hooks::watch(&hooks, debounce, stop.clone(), move |_| {
        let _ = requests.try_send(());
    });
    let _watcher = match watcher {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the hooks folder; reload with SIGHUP instead");
            None
        }
    };
    let mut hangup = signal(SignalKind::hangup()).ok();
    loop {
        let hangup_received = async {
            match hangup.as_mut() {
                Some(stream) => stream.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = requested.recv() => {}
            _ = hangup_received => tracing::info!("SIGHUP received: reloading hooks"),
            () = stop.cancelled() => return,
        }
        crate::dispatch::reload_and_report(&hooks, &outbox).await;
    }
}

/// Waits for the first signal, drains, and handles a second signal.
async fn wait_for_shutdown(
    dispatcher: &Arc<Dispatcher>,
    drain_timeout: Duration,
) -> Result<(), AgentError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!(
        active = dispatcher.active(),
        "shutdown requested: draining; send the signal again to cancel runs now"
    );
    dispatcher.drain();

    tokio::select! {
        () = dispatcher.wait_idle() => {}
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "drain timeout passed; cancelling active runs");
            dispatcher.cancel_all("the runner is shutting down");
        }
        _ = terminate.recv() => dispatcher.cancel_all("the runner was stopped"),
        _ = interrupt.recv() => dispatcher.cancel_all("the runner was stopped"),
    }
    dispatcher.wait_idle().await;
    Ok(())
}

/// Waits until the control plane has acknowledged every outbox entry or
/// `timeout` passes. Unacknowledged entries stay in the journal and are
/// sent by the next runner process that uses the same state directory.
async fn flush_outbox(outbox: &Outbox, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while outbox.pending() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if outbox.pending() > 0 {
        tracing::warn!(
            unsent = outbox.pending(),
            timeout_ms = timeout.as_millis() as u64,
            "flush timeout passed; unacknowledged messages stay in the outbox journal for the next start"
        );
    }
}

/// Returns the id of this runner's outbox, kept in the state directory so
/// sequence numbers continue across restarts and the control plane can
/// recognise replayed messages.
fn instance_id(state_dir: &std::path::Path, keep: bool) -> Result<String, AgentError> {
    let path = state_dir.join("instance-id");
    let state_error = |source| AgentError::State {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if keep && !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(state_error(error)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).map_err(state_error)?;
    Ok(id)
}

pub(crate) fn create_private_dir(path: &std::path::Path) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| AgentError::Directory {
            path: path.to_path_buf(),
            source,
        })
}
