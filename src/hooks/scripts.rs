//! Reads the hook scripts of a directory into memory and hashes them.
//!
//! The engine compiles scripts and resolves `require` from this snapshot only, so
//! a state never mixes file versions and never reads outside the directory.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::HookLoadError;

/// Largest hook script the engine reads, in bytes. Hook scripts are short
/// programs, so a larger file is a mistake such as a data file named `.lua`.
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;

/// One `*.lua` file of the hooks directory.
#[derive(Debug, Clone)]
pub(crate) struct ScriptFile {
    /// File name, such as `pre.lua`.
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) source: Vec<u8>,
}

impl ScriptFile {
    /// Returns the module name `require` uses for this file: the name without `.lua`.
    pub(crate) fn module_name(&self) -> &str {
        self.name.strip_suffix(".lua").unwrap_or(&self.name)
    }
}

/// Snapshot of every hook script in a directory, sorted by file name.
#[derive(Debug, Clone)]
pub(crate) struct ScriptSet {
    pub(crate) dir: PathBuf,
    /// Name of the directory, used as the prefix of chunk names (`hooks/pre.lua`).
    pub(crate) dir_label: String,
    pub(crate) files: Vec<ScriptFile>,
    pub(crate) content_hash: String,
}

impl ScriptSet {
    /// Reads every regular `*.lua` file directly in `dir`. Symbolic links are
    /// followed, because Kubernetes mounts ConfigMap files as links. Names that
    /// start with `.` are skipped: editors use them for swap and lock files.
    pub(crate) fn read(dir: &Path) -> Result<ScriptSet, HookLoadError> {
        let read_dir_error = |source| HookLoadError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_dir_error)? {
            let path = entry.map_err(read_dir_error)?.path();
            if let Some(file) = read_script(&path)? {
                files.push(file);
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));

        let dir_label = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "hooks".to_string());
        let content_hash = hash_files(&files);
        Ok(ScriptSet {
            dir: dir.to_path_buf(),
            dir_label,
            files,
            content_hash,
        })
    }

    /// Returns the display name of a file as it appears in Lua errors: `hooks/pre.lua`.
    pub(crate) fn display_name(&self, file: &ScriptFile) -> String {
        format!("{}/{}", self.dir_label, file.name)
    }

    /// Returns the file that `require(module)` loads.
    pub(crate) fn module(&self, module: &str) -> Option<&ScriptFile> {
        self.files.iter().find(|file| file.module_name() == module)
    }
}

/// Reads one directory entry if it is a hook script, or returns `None`.
fn read_script(path: &Path) -> Result<Option<ScriptFile>, HookLoadError> {
    let Some(raw_name) = path.file_name() else {
        return Ok(None);
    };
    let Some(name) = raw_name.to_str() else {
        if raw_name.to_string_lossy().ends_with(".lua") {
            return Err(HookLoadError::InvalidFileName {
                path: path.to_path_buf(),
            });
        }
        return Ok(None);
    };
    if !name.ends_with(".lua") || name.starts_with('.') {
        return Ok(None);
    }
    // `fs::metadata` follows links. A dangling link is skipped like any non-file.
    let Ok(metadata) = fs::metadata(path) else {
        return Ok(None);
    };
    if !metadata.is_file() {
        return Ok(None);
    }
    if metadata.len() > MAX_SCRIPT_BYTES as u64 {
        return Err(HookLoadError::FileTooLarge {
            path: path.to_path_buf(),
            size: metadata.len(),
            max: MAX_SCRIPT_BYTES,
        });
    }
    let source = fs::read(path).map_err(|source| HookLoadError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    // The file can grow between `metadata` and `read`.
    if source.len() > MAX_SCRIPT_BYTES {
        return Err(HookLoadError::FileTooLarge {
            path: path.to_path_buf(),
            size: source.len() as u64,
            max: MAX_SCRIPT_BYTES,
        });
    }
    Ok(Some(ScriptFile {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    }))
}

/// Hashes the sorted file names and contents with SHA-256. Each name and content
/// is preceded by its length, so moving bytes between files changes the hash.
fn hash_files(files: &[ScriptFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update((file.name.len() as u64).to_le_bytes());
        hasher.update(file.name.as_bytes());
        hasher.update((file.source.len() as u64).to_le_bytes());
        hasher.update(&file.source);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
