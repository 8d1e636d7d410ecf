//! The secret fields of OpenMetadata workflow configs.
//!
//! This is the one list of them. It is built from the properties that the
//! OpenMetadata JSON Schemas (`openmetadata-spec`) mark `format: password`,
//! across connection, credential and client-config schemas. Only secret fields
//! may hold `secret:` references, and their literal values are redacted too.

/// Property names that are marked `format: password` wherever OpenMetadata
/// uses them, so they are secret fields at any path.
pub const SECRET_PROPERTY_NAMES: &[&str] = &[
    "accessToken",
    "accessTokenPassword",
    "apiKey",
    "apiSecret",
    "api_secret",
    "authString",
    "awsSecretAccessKey",
    "azureClientSecret",
    "basicAuthUserInfo",
    "caCertValue",
    "certificate",
    "clientCertValue",
    "clientCertificateData",
    "clientKeyCertificateData",
    "clientSecret",
    "dbtCloudAuthToken",
    "jwt",
    "jwtToken",
    "nkeySeed",
    "password",
    "personalAccessToken",
    "personalAccessTokenSecret",
    "privateKey",
    "privateKeyPassphrase",
    "privateKeyValue",
    "proxyAuthentication",
    "refreshToken",
    "rootCertificateData",
    "saslPassword",
    "secret",
    "secretAccessKey",
    "secretId",
    "secretKey",
    "secretToken",
    "securityToken",
    "snowflakePrivatekeyPassphrase",
    "token",
];

/// Names that are secret only in a few schemas; elsewhere they hold ordinary
/// metadata (`clientId`, `awsAccessKeyId`), so they match only at these
/// paths, relative to `serviceConnection.config`, of these connection types.
///
/// NOTE: `username` is marked `format: password` in Azure's
/// `usernamePasswordCredentials` schema, but no connector path to it is known
/// here; list it in the run request's `secretFields` where it applies.
pub const PATH_RULES: &[PathRule] = &[
    PathRule {
        connection_type: "Iceberg",
        suffix: "catalog.connection.credential.clientId",
    },
    PathRule {
        connection_type: "OpenSearch",
        suffix: "authType.awsAccessKeyId",
    },
    PathRule {
        connection_type: "OpenSearch",
        suffix: "authType.awsSessionToken",
    },
];

/// A secret field known by its path within one connection type.
#[derive(Debug, Clone, Copy)]
pub struct PathRule {
    /// Value of `serviceConnection.config.type`.
    pub connection_type: &'static str,
    /// Dotted path below `serviceConnection.config`.
    pub suffix: &'static str,
}

/// Returns true when the field at `path` (dotted, array items as `[N]`) is a
/// secret field of a workflow whose connection type is `connection_type`.
pub fn is_secret_field(path: &str, key: &str, connection_type: Option<&str>) -> bool {
    if SECRET_PROPERTY_NAMES.contains(&key) {
        return true;
    }
    let Some(connection_type) = connection_type else {
        return false;
    };
    PATH_RULES.iter().any(|rule| {
        rule.connection_type.eq_ignore_ascii_case(connection_type)
            && path
                .strip_suffix(rule.suffix)
                .is_some_and(|parent| parent.ends_with("serviceConnection.config."))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_names_match_anywhere() {
        assert!(is_secret_field(
            "source.serviceConnection.config.authType.password",
            "password",
            None
        ));
        assert!(is_secret_field(
            "workflowConfig.openMetadataServerConfig.securityConfig.jwtToken",
            "jwtToken",
            None
        ));
        assert!(!is_secret_field(
            "source.serviceConnection.config.hostPort",
            "hostPort",
            None
        ));
        assert!(!is_secret_field(
            "source.serviceConnection.config.username",
            "username",
            None
        ));
    }

    #[test]
    fn client_id_is_secret_only_for_iceberg_rest() {
        let path = "source.serviceConnection.config.catalog.connection.credential.clientId";
        assert!(is_secret_field(path, "clientId", Some("Iceberg")));
        assert!(!is_secret_field(path, "clientId", Some("Datalake")));
        let datalake = "source.serviceConnection.config.configSource.securityConfig.clientId";
        assert!(!is_secret_field(datalake, "clientId", Some("Datalake")));
    }

    #[test]
    fn aws_key_id_secret_for_opensearch() {
        let path = "source.serviceConnection.config.authType.awsAccessKeyId";
        assert!(is_secret_field(path, "awsAccessKeyId", Some("OpenSearch")));
        assert!(!is_secret_field(path, "awsAccessKeyId", Some("Mysql")));
    }
}
