//! `runner.secrets.get(reference)`: secrets for hooks, through the runner's
//! policy, providers and redactor.

use mlua::{Lua, Table};

use super::{error_at, sub_table};
use crate::hooks::SecretLookup;

/// Registers `runner.secrets.get(reference)`. It returns the value, or raises
/// an error that names the reference (never a value). The value is registered
/// with the redactor before it is returned, so it is masked wherever it goes.
pub(crate) fn register_secrets(
    lua: &Lua,
    runner: &Table,
    lookup: Option<SecretLookup>,
) -> mlua::Result<()> {
    let secrets = sub_table(lua, runner, "secrets")?;
    let get = lua.create_async_function(move |lua, reference: String| {
        let lookup = lookup.clone();
        async move {
            let Some(lookup) = lookup else {
                return Err(error_at(
                    &lua,
                    "runner.secrets.get: no secrets provider is configured here",
                ));
            };
            (lookup.0)(reference, crate::hooks::run_scope())
                .await
                .map_err(|error| error_at(&lua, format!("runner.secrets.get: {error}")))
        }
    })?;
    secrets.raw_set("get", get)
}
