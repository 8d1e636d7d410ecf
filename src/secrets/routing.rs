//! Several named stores and the routes that pick one per reference.
//!
//! A route maps a reference path prefix to a store, and the longest matching
//! prefix wins. References that match no route go to the default store. A
//! runner with one `secrets.provider` has one store, named after its type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{SecretProvider, SecretRef};

/// One configured store.
#[derive(Clone)]
pub struct NamedProvider {
    /// The name from runner.yaml (`secrets.providers.<name>`), or the type for
    /// a runner with a single `secrets.provider`.
    pub name: String,
    pub provider: Arc<dyn SecretProvider>,
}

impl NamedProvider {
    /// Returns the name for messages: `aws` when the name is the type, else
    /// `sales (aws)`.
    pub fn label(&self) -> String {
        if self.name == self.provider.kind() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, self.provider.kind())
        }
    }
}

impl fmt::Debug for NamedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A reference prefix served by one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub provider: String,
}

/// The configured stores and the routes between them.
#[derive(Debug, Clone)]
pub struct ProviderSet {
    providers: BTreeMap<String, NamedProvider>,
    /// Sorted by descending prefix length, so the first match is the longest.
    routes: Vec<Route>,
    default: String,
}

impl ProviderSet {
    /// Creates a set with one store named after its type.
    pub fn single(provider: Arc<dyn SecretProvider>) -> Self {
        let name = provider.kind().to_string();
        let mut providers = BTreeMap::new();
        providers.insert(
            name.clone(),
            NamedProvider {
                name: name.clone(),
                provider,
            },
        );
        ProviderSet {
            providers,
            routes: Vec::new(),
            default: name,
        }
    }

    /// Builds a set from named stores, routes and the default store's name.
    /// Every route and the default must name a store.
    pub fn new(
        providers: BTreeMap<String, Arc<dyn SecretProvider>>,
        mut routes: Vec<Route>,
        default: String,
    ) -> Result<Self, String> {
        let names = || providers.keys().cloned().collect::<Vec<_>>().join(", ");
        if !providers.contains_key(&default) {
            return Err(format!(
                "default provider {default:?} is not configured; configured providers: {}",
                names()
            ));
        }
        if let Some(route) = routes
            .iter()
            .find(|route| !providers.contains_key(&route.provider))
        {
            return Err(format!(
                "route {:?} names provider {:?}, which is not configured; configured providers: {}",
                route.prefix,
                route.provider,
                names()
            ));
        }
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let providers = providers
            .into_iter()
            .map(|(name, provider)| {
                let named = NamedProvider {
                    name: name.clone(),
                    provider,
                };
                (name, named)
            })
            .collect();
        Ok(ProviderSet {
            providers,
            routes,
            default,
        })
    }

    /// Returns the store that serves `reference` by route.
    pub fn route(&self, reference: &SecretRef) -> &NamedProvider {
        let name = self
            .routes
            .iter()
            .find(|route| reference.path().starts_with(route.prefix.as_str()))
            .map_or(&self.default, |route| &route.provider);
        &self.providers[name]
    }

    /// Returns the store called `name`.
    pub fn get(&self, name: &str) -> Option<&NamedProvider> {
        self.providers.get(name)
    }

    /// Returns the names of all stores, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.providers.keys().map(String::as_str).collect()
    }

    /// Describes the stores for logs: `aws`, or `local (file), main (aws)`.
    pub fn summary(&self) -> String {
        self.providers
            .values()
            .map(NamedProvider::label)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Returns the default store.
    pub fn default_provider(&self) -> &NamedProvider {
        &self.providers[&self.default]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{EnvProvider, FileProvider};

    fn set() -> ProviderSet {
        let mut providers: BTreeMap<String, Arc<dyn SecretProvider>> = BTreeMap::new();
        providers.insert(
            "local".into(),
            Arc::new(FileProvider::new("/nonexistent.yaml".into())),
        );
        providers.insert("vars".into(), Arc::new(EnvProvider::new("TEST_".into())));
        ProviderSet::new(
            providers,
            vec![
                Route {
                    prefix: "/collate/".into(),
                    provider: "vars".into(),
                },
                Route {
                    prefix: "/collate/hybrid-ingestion/local/".into(),
                    provider: "local".into(),
                },
            ],
            "local".into(),
        )
        .expect("valid set")
    }

    fn routed(set: &ProviderSet, text: &str) -> String {
        set.route(&SecretRef::parse(text).expect("reference"))
            .name
            .clone()
    }

    #[test]
    fn longest_prefix_wins() {
        let set = set();
        assert_eq!(
            routed(&set, "secret:/collate/hybrid-ingestion/local/pw"),
            "local"
        );
        assert_eq!(
            routed(&set, "secret:/collate/hybrid-ingestion/pg/pw"),
            "vars"
        );
    }

    #[test]
    fn unrouted_reference_goes_to_default() {
        assert_eq!(routed(&set(), "secret:/other/pw"), "local");
    }

    #[test]
    fn unknown_names_are_rejected() {
        let providers = || {
            let mut providers: BTreeMap<String, Arc<dyn SecretProvider>> = BTreeMap::new();
            providers.insert("vars".into(), Arc::new(EnvProvider::new("TEST_".into())));
            providers
        };
        let error = ProviderSet::new(providers(), Vec::new(), "aws".into()).unwrap_err();
        assert_eq!(
            error,
            "default provider \"aws\" is not configured; configured providers: vars"
        );
        let route = Route {
            prefix: "/a/".into(),
            provider: "gcp".into(),
        };
        let error = ProviderSet::new(providers(), vec![route], "vars".into()).unwrap_err();
        assert_eq!(
            error,
            "route \"/a/\" names provider \"gcp\", which is not configured; configured providers: vars"
        );
    }

    #[test]
    fn single_store_is_named_after_its_type() {
        let set = ProviderSet::single(Arc::new(EnvProvider::new("TEST_".into())));
        assert_eq!(set.names(), vec!["env"]);
        assert_eq!(set.default_provider().label(), "env");
        assert_eq!(routed(&set, "secret:/any/pw"), "env");
    }
}
