//! `runner.fs`: facts about the runner's file systems for checks.

use std::path::{Component, Path, PathBuf};

use mlua::{Lua, Table};

use super::{error_at, sub_table};

/// Registers `runner.fs.work_dir` (the runner's work directory, when known) and
/// `runner.fs.free_space(path)`.
///
/// `free_space` takes an absolute path of an existing directory without `..`
/// and returns `{ total_bytes, free_bytes, available_bytes, available_percent }`
/// for the file system that contains it. `available_bytes` is what an
/// unprivileged process may still write. It reads only file system totals, never
/// names or contents.
pub(crate) fn register_fs(
    lua: &Lua,
    runner: &Table,
    work_dir: Option<PathBuf>,
) -> mlua::Result<()> {
    let fs = sub_table(lua, runner, "fs")?;
    if let Some(dir) = work_dir {
        fs.raw_set("work_dir", dir.to_string_lossy().into_owned())?;
    }
    let free_space = lua.create_function(|lua, path: String| {
        let path = checked_dir(&path)
            .map_err(|message| error_at(lua, format!("runner.fs.free_space: {message}")))?;
        let stats = nix::sys::statvfs::statvfs(&path).map_err(|errno| {
            error_at(
                lua,
                format!(
                    "runner.fs.free_space: cannot read the file system of {}: {errno}",
                    path.display()
                ),
            )
        })?;
        let fragment = stats.fragment_size() as u64;
        let total = stats.blocks() as u64 * fragment;
        let available = stats.blocks_available() as u64 * fragment;
        let table = lua.create_table()?;
        table.raw_set("total_bytes", total)?;
        table.raw_set("free_bytes", stats.blocks_free() as u64 * fragment)?;
        table.raw_set("available_bytes", available)?;
        let percent = if total == 0 {
            0.0
        } else {
            available as f64 * 100.0 / total as f64
        };
        table.raw_set("available_percent", percent)?;
        Ok(table)
    })?;
    fs.raw_set("free_space", free_space)
}

/// Accepts an absolute path of an existing directory with no `..` component.
fn checked_dir(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!(
            "{text:?} is not an absolute path; pass a folder such as runner.fs.work_dir"
        ));
    }
    if path
        .components()
        .any(|component| component == Component::ParentDir)
    {
        return Err(format!("{text:?} contains \"..\"; pass the folder itself"));
    }
    if !path.is_dir() {
        return Err(format!("{text:?} is not an existing folder"));
    }
    Ok(path.to_path_buf())
}
