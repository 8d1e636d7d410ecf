//! The optional `openmetadata` section: the OpenMetadata server that workflow
//! processes report to, and the bot token they use.

use super::reader::{Issues, Section};
use super::{TokenSource, check_http_url};

/// OpenMetadata server that workflows send metadata and statuses to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenMetadataConfig {
    /// OpenMetadata API base URL, such as `https://metadata.example.com/api`.
    pub host_port: String,
    /// Source of the bot JWT; `None` uses the control plane token.
    pub jwt_token: Option<TokenSource>,
}

/// Reads the `openmetadata` section, or returns `None` when it is absent.
pub(super) fn read(mut section: Section, issues: &mut Issues) -> Option<OpenMetadataConfig> {
    if !section.is_present() {
        return None;
    }
    let host_port = section.required_string("host_port", issues);
    if let Some(url) = &host_port {
        check_http_url(url, &section.path_of("host_port"), issues);
    }
    let token_file = section.path("jwt_token_file", issues);
    let token_env = section.string("jwt_token_env", issues);
    let jwt_token = match (token_file, token_env) {
        (Some(path), None) => Some(TokenSource::File(path)),
        (None, Some(name)) => Some(TokenSource::Env(name)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            issues.push(
                &section.path_of("jwt_token_file"),
                "set either jwt_token_file or jwt_token_env, not both",
            );
            None
        }
    };
    section.finish(issues);
    Some(OpenMetadataConfig {
        host_port: host_port?,
        jwt_token,
    })
}
