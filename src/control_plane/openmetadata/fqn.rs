//! Fully qualified names of OpenMetadata entities.
//!
//! An FQN joins the names from the service down with `.`, for example
//! `shop_pg.shop.sales.orders`. A name that contains a dot is wrapped in double
//! quotes, so `"inventory.v2"` stays one part: `shop_pg.shop."inventory.v2"`.
//! This follows `FullyQualifiedName.quoteName` of the OpenMetadata server.

/// Reason a name cannot be part of an FQN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FqnError {
    #[error("the name is empty; set a non-empty name")]
    Empty,
    #[error(
        "invalid name {0:?}: a double quote is allowed only around a whole name that contains a dot"
    )]
    Quote(String),
}

/// Returns `name` as one FQN part: quoted when it contains a dot, unchanged otherwise.
///
/// A name that already has quotes around it and contains a dot is kept as
/// is, because clients send both forms.
pub fn quote_name(name: &str) -> Result<String, FqnError> {
    if name.is_empty() {
        return Err(FqnError::Empty);
    }
    let inner = name
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'));
    if let Some(inner) = inner
        && inner.contains('.')
        && !inner.contains('"')
    {
        return Ok(name.to_string());
    }
    if name.contains('"') {
        return Err(FqnError::Quote(name.to_string()));
    }
    if name.contains('.') {
        Ok(format!("\"{name}\""))
    } else {
        Ok(name.to_string())
    }
}

/// Appends the quoted `name` to the FQN of its parent, or starts a new FQN.
pub fn child(parent: Option<&str>, name: &str) -> Result<String, FqnError> {
    let part = quote_name(name)?;
    Ok(match parent {
        Some(parent) => format!("{parent}.{part}"),
        None => part,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an FQN into its names, removing the quotes around names with dots.
    pub fn split(fqn: &str) -> Vec<String> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut quoted = false;
        for character in fqn.chars() {
            match character {
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(std::mem::take(&mut current)),
                other => current.push(other),
            }
        }
        parts.push(current);
        parts
    }

    #[test]
    fn plain_names_unquoted() {
        assert_eq!(quote_name("orders").unwrap(), "orders");
        assert_eq!(
            child(Some("shop_pg.shop.sales"), "orders").unwrap(),
            "shop_pg.shop.sales.orders"
        );
        assert_eq!(child(None, "shop_pg").unwrap(), "shop_pg");
    }

    #[test]
    fn dotted_names_quoted() {
        assert_eq!(quote_name("inventory.v2").unwrap(), "\"inventory.v2\"");
        assert_eq!(
            child(Some("shop_pg.shop"), "inventory.v2").unwrap(),
            "shop_pg.shop.\"inventory.v2\""
        );
        assert_eq!(
            child(Some("shop_pg.shop.\"inventory.v2\""), "stock.items").unwrap(),
            "shop_pg.shop.\"inventory.v2\".\"stock.items\""
        );
    }

    #[test]
    fn quoted_names_kept() {
        assert_eq!(quote_name("\"a.b\"").unwrap(), "\"a.b\"");
    }

    #[test]
    fn invalid_names_rejected() {
        assert_eq!(quote_name(""), Err(FqnError::Empty));
        assert!(matches!(quote_name("a\"b"), Err(FqnError::Quote(_))));
        assert!(matches!(quote_name("\"ab\""), Err(FqnError::Quote(_))));
    }

    #[test]
    fn split_respects_quotes() {
        assert_eq!(
            split("shop_pg.shop.\"inventory.v2\".\"stock.items\""),
            vec!["shop_pg", "shop", "inventory.v2", "stock.items"]
        );
        assert_eq!(split("a"), vec!["a"]);
    }

    #[test]
    fn split_inverts_child() {
        let names = ["svc", "db.1", "schema", "t.a.b"];
        let mut fqn: Option<String> = None;
        for name in names {
            fqn = Some(child(fqn.as_deref(), name).unwrap());
        }
        assert_eq!(split(&fqn.unwrap()), names);
    }
}
