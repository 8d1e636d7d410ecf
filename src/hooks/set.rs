//! Generations of hook scripts and hot reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::engine::HookEngine;
use super::scripts::ScriptSet;
use super::{HookError, HookLimits, HookLoadError, HookOutcome, HookPoint};

/// The hook scripts of one directory, served from the newest generation that
/// loaded without errors.
///
/// A call keeps an `Arc` of the generation it started on, so a reload never
/// disturbs calls in flight: they finish on the old state, which is dropped with
/// its last call.
#[derive(Debug)]
pub struct HookSet {
    dir: PathBuf,
    limits: HookLimits,
    current: RwLock<Arc<HookEngine>>,
    /// Serializes reloads, so generation numbers follow the order of swaps.
    reload_lock: tokio::sync::Mutex<()>,
    /// Number of the generation serving, for tasks that follow reloads.
    generation: tokio::sync::watch::Sender<u64>,
}

/// Result of a successful [`HookSet::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Generation serving after the reload.
    pub generation: u64,
    /// Generation that served before the reload.
    pub previous_generation: u64,
    /// Whether the scripts changed. When they did not, the old state keeps
    /// serving and the generation stays the same.
    pub changed: bool,
    /// SHA-256 hex digest of the scripts now serving.
    pub content_hash: String,
    /// Script files now serving.
    pub files: Vec<PathBuf>,
}

impl HookSet {
    /// Loads the scripts of `dir` as generation 1. Blocks while the top-level
    /// code runs, like [`HookEngine::load`].
    pub fn load(dir: &Path, limits: HookLimits) -> Result<HookSet, HookLoadError> {
        let engine = HookEngine::load(dir, limits.clone())?;
        let (generation, _) = tokio::sync::watch::channel(engine.generation());
        Ok(HookSet {
            dir: dir.to_path_buf(),
            limits,
            current: RwLock::new(Arc::new(engine)),
            reload_lock: tokio::sync::Mutex::new(()),
            generation,
        })
    }

    /// Returns the hooks directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the generation serving new calls.
    pub fn current(&self) -> Arc<HookEngine> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&current)
    }

    /// Returns a receiver of the number of the generation serving; it changes
    /// after each reload that swaps in a new generation.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Fires a hook on the current generation. See [`HookEngine::fire`].
    pub async fn fire(
        &self,
        hook: HookPoint,
        input: serde_json::Value,
    ) -> Result<HookOutcome, HookError> {
        self.current().fire(hook, input).await
    }

    /// Reads the directory again and, when the scripts changed, loads them into a
    /// new state and swaps it in. A load error leaves the current generation
    /// serving and is returned with the file and line.
    pub async fn reload(&self) -> Result<ReloadReport, HookLoadError> {
        let _reloading = self.reload_lock.lock().await;
        let previous = self.current();
        let dir = self.dir.clone();
        let limits = self.limits.clone();
        let next_generation = previous.generation() + 1;
        let previous_hash = previous.content_hash();

        // Reading files and running top-level code block, so they run off the
        // async worker threads.
        let loaded = tokio::task::spawn_blocking(move || {
            let scripts = ScriptSet::read(&dir)?;
            if scripts.content_hash == previous_hash {
                return Ok(None);
            }
            HookEngine::load_generation(scripts, limits, next_generation).map(Some)
        })
        .await
        .map_err(|err| HookLoadError::Setup {
            message: format!("the reload task failed: {err}"),
        })??;

        let Some(engine) = loaded else {
            return Ok(report(&previous, previous.generation(), false));
        };
        let engine = Arc::new(engine);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::clone(&engine);
        self.generation.send_replace(engine.generation());
        tracing::info!(
            dir = %self.dir.display(),
            generation = engine.generation(),
            content_hash = %engine.content_hash(),
            "hook scripts reloaded"
        );
        Ok(report(&engine, previous.generation(), true))
    }
}

fn report(engine: &HookEngine, previous_generation: u64, changed: bool) -> ReloadReport {
    ReloadReport {
        generation: engine.generation(),
        previous_generation,
        changed,
        content_hash: engine.content_hash(),
        files: engine.files(),
    }
}
