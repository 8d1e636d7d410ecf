//! Watches the hooks directory and turns file changes into reload requests.
//!
//! The watcher never reloads by itself: the owner of the [`super::HookSet`]
//! decides when to call [`super::HookSet::reload`], for example between runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio_util::sync::CancellationToken;

use super::{HookSet, HookWatchError};

/// A request to reload the hook scripts, with the changed paths. The paths are
/// empty when the watcher reported an error and changes may have been missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRequest {
    pub paths: Vec<PathBuf>,
}

type HookDebouncer = Debouncer<RecommendedWatcher, RecommendedCache>;

/// A running watcher. Dropping it stops the watcher, and no request is sent after
/// the drop returns.
pub struct WatchHandle {
    debouncer: Arc<Mutex<Option<HookDebouncer>>>,
    stopped: Arc<AtomicBool>,
    /// Cancelled on drop, so the task that waits for the caller's token ends too.
    dropped: CancellationToken,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("stopped", &self.stopped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        stop(&self.stopped, &self.debouncer);
        self.dropped.cancel();
    }
}

/// Watches the directory of `set` and calls `on_request` once per burst of
/// changes, after `debounce` without further changes. The watcher stops when the
/// handle is dropped or `cancel` is cancelled. `on_request` runs on the
/// watcher's own thread and should only hand the request on, for example into a
/// channel.
///
/// Must be called inside a tokio runtime, which waits for `cancel`.
pub fn watch<F>(
    set: &HookSet,
    debounce: Duration,
    cancel: CancellationToken,
    on_request: F,
) -> Result<WatchHandle, HookWatchError>
where
    F: Fn(ReloadRequest) + Send + 'static,
{
    let dir = set.dir().to_path_buf();
    let stopped = Arc::new(AtomicBool::new(false));
    let handler_stopped = Arc::clone(&stopped);
    let handler_cancel = cancel.clone();
    let handler = move |result: DebounceEventResult| {
        if handler_stopped.load(Ordering::SeqCst) || handler_cancel.is_cancelled() {
            return;
        }
        if let Some(request) = to_request(result) {
            on_request(request);
        }
    };

    let watch_error = |source| HookWatchError::Watch {
        dir: dir.clone(),
        source,
    };
    let mut debouncer = new_debouncer(debounce, None, handler).map_err(watch_error)?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    tracing::info!(dir = %dir.display(), "watching hook scripts for changes");

    let debouncer = Arc::new(Mutex::new(Some(debouncer)));
    let dropped = CancellationToken::new();
    spawn_cancel_task(cancel, dropped.clone(), &stopped, &debouncer);
    Ok(WatchHandle {
        debouncer,
        stopped,
        dropped,
    })
}

/// Stops the watcher when the caller's token is cancelled before the handle drops.
fn spawn_cancel_task(
    cancel: CancellationToken,
    dropped: CancellationToken,
    stopped: &Arc<AtomicBool>,
    debouncer: &Arc<Mutex<Option<HookDebouncer>>>,
) {
    let stopped = Arc::clone(stopped);
    let debouncer = Arc::clone(debouncer);
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => stop(&stopped, &debouncer),
            _ = dropped.cancelled() => {}
        }
    });
}

fn stop(stopped: &AtomicBool, debouncer: &Mutex<Option<HookDebouncer>>) {
    stopped.store(true, Ordering::SeqCst);
    let debouncer = debouncer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if debouncer.is_some() {
        tracing::info!("stopped watching hook scripts");
    }
    // Dropping the debouncer signals its thread to stop and closes the OS watch.
    drop(debouncer);
}

/// Builds a reload request from debounced events, or `None` when no hook script
/// changed.
fn to_request(result: DebounceEventResult) -> Option<ReloadRequest> {
    let events = match result {
        Ok(events) => events,
        Err(errors) => {
            for error in &errors {
                tracing::warn!(error = %error, "hook script watcher reported an error; requesting a reload");
            }
            return Some(ReloadRequest { paths: Vec::new() });
        }
    };
    let mut paths: Vec<PathBuf> = events
        .iter()
        .filter(|event| is_change(&event.kind))
        .flat_map(|event| event.paths.iter())
        .filter(|path| is_relevant(path))
        .cloned()
        .collect();
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return None;
    }
    Some(ReloadRequest { paths })
}

/// Skips events that only read files, such as the engine's own reads on reload.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Accepts hook scripts and the `..data` link that Kubernetes swaps when a
/// mounted ConfigMap changes. Editor swap and backup files are skipped.
fn is_relevant(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    if name.starts_with("..") {
        return true;
    }
    name.ends_with(".lua") && !name.starts_with('.')
}
