//! Signed run requests: Ed25519 signatures in detached JWS form.
//!
//! A signed `run.request` envelope carries a `signature` next to its
//! `payload`. The signature is a JWS compact serialization with a detached
//! payload (RFC 7515, appendix F): `BASE64URL(header) + ".." +
//! BASE64URL(signature)`. The header is a JSON object with `"alg": "EdDSA"`
//! (RFC 8037) and, for keys from a JWKS, the `kid` of the signing key. The
//! signed bytes are the ASCII of `BASE64URL(header) + "." +
//! BASE64URL(canonical payload)`, where the canonical payload is
//! [`canonical_json`] of the envelope's `payload`.
//!
//! The runner checks requests with a [`RequestVerifier`], built from an
//! Ed25519 public key or a JWKS file. The reference control plane signs them
//! with a [`RequestSigner`], built from the matching PKCS#8 private key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::Value;

/// JWS `alg` value of Ed25519 signatures (RFC 8037).
pub const ALGORITHM: &str = "EdDSA";

/// Maximum size of a key or JWKS file.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// Reason a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_KEY_FILE_BYTES} bytes; expected one key or a JWKS")]
    TooLarge { path: PathBuf },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// Reason a run request's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "the run request is not signed; this runner requires a signature (control_plane.signing)"
    )]
    Missing,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("unsupported signature algorithm {0:?}; expected \"EdDSA\"")]
    Algorithm(String),
    #[error("the signature header has no kid; the configured JWKS needs one to pick the key")]
    MissingKeyId,
    #[error("unknown signing key id {0:?}; it is not in the configured JWKS")]
    UnknownKeyId(String),
    #[error("the signature does not match the request and the configured key")]
    Mismatch,
}

/// Writes `value` as compact JSON with the keys of every object sorted by
/// their UTF-8 bytes, the form that signatures cover.
///
/// Strings are written as serde_json writes them: only `"`, `\` and control
/// characters are escaped, and those with the short forms (`\n`, `\t`, ...)
/// or lowercase `\u00xx`. Integers are written in decimal without exponent.
/// For payloads whose numbers are integers below 2^53 and whose keys contain
/// no characters above U+FFFF, this equals RFC 8785 (JCS).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Returns the bytes a JWS signature with `encoded_header` covers.
fn signing_input(encoded_header: &str, payload: &Value) -> String {
    let encoded_payload = URL_SAFE_NO_PAD.encode(canonical_json(payload));
    format!("{encoded_header}.{encoded_payload}")
}

/// Signs run request payloads; used by the reference control plane.
pub struct RequestSigner {
    key: SigningKey,
    key_id: Option<String>,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl RequestSigner {
    /// Creates a signer; `key_id` goes into the header as `kid`.
    pub fn new(key: SigningKey, key_id: Option<String>) -> Self {
        RequestSigner { key, key_id }
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn load(path: &Path, key_id: Option<String>) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|error| KeyError::Invalid {
            path: path.to_path_buf(),
            problem: format!("not an Ed25519 PKCS#8 PEM private key: {error}"),
        })?;
        Ok(RequestSigner::new(key, key_id))
    }

    /// Returns the public key that verifies this signer's signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Returns the detached JWS over the canonical form of `payload`.
    pub fn sign(&self, payload: &Value) -> String {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), Value::String(ALGORITHM.into()));
        if let Some(key_id) = &self.key_id {
            header.insert("kid".into(), Value::String(key_id.clone()));
        }
        let encoded_header = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
        let signature = self
            .key
            .sign(signing_input(&encoded_header, payload).as_bytes());
        format!(
            "{encoded_header}..{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// Public keys that run request signatures must match.
#[derive(Debug, Clone)]
pub enum RequestVerifier {
    /// One key; a `kid` in the header is not needed and not checked.
    Single(VerifyingKey),
    /// Keys of a JWKS by `kid`; the header must name one of them.
    KeySet(Vec<(String, VerifyingKey)>),
}

impl RequestVerifier {
    /// Loads an Ed25519 public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or
    /// the 32 raw key bytes in base64 (standard or URL-safe alphabet).
    pub fn load_public_key(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        let invalid = |problem: String| KeyError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        if text.contains("-----BEGIN") {
            let key = VerifyingKey::from_public_key_pem(&text).map_err(|error| {
                invalid(format!(
                    "not an Ed25519 public key in SPKI PEM form: {error}"
                ))
            })?;
            return Ok(RequestVerifier::Single(key));
        }
        let key = decode_raw_key(text.trim()).map_err(invalid)?;
        Ok(RequestVerifier::Single(key))
    }

    /// Loads the Ed25519 keys (`kty` OKP, `crv` Ed25519) of a JWKS file. Keys
    /// of other types are skipped; every Ed25519 key needs a `kid`.
    pub fn load_jwks(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        let invalid = |problem: String| KeyError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let document: Value = serde_json::from_str(&text)
            .map_err(|error| invalid(format!("not valid JSON: {error}")))?;
        let Some(keys) = document.get("keys").and_then(Value::as_array) else {
            return Err(invalid("missing the \"keys\" array of a JWKS".into()));
        };
        let mut found = Vec::new();
        for (index, jwk) in keys.iter().enumerate() {
            let field = |name: &str| jwk.get(name).and_then(Value::as_str);
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                continue;
            }
            if field("use").is_some_and(|usage| usage != "sig") {
                continue;
            }
            let Some(key_id) = field("kid") else {
                return Err(invalid(format!("keys[{index}] has no kid")));
            };
            let Some(x) = field("x") else {
                return Err(invalid(format!("keys[{index}] (kid {key_id:?}) has no x")));
            };
            let key = decode_raw_key(x)
                .map_err(|problem| invalid(format!("keys[{index}] (kid {key_id:?}): {problem}")))?;
            found.push((key_id.to_string(), key));
        }
        if found.is_empty() {
            return Err(invalid(
                "contains no Ed25519 key (kty \"OKP\", crv \"Ed25519\")".into(),
            ));
        }
        Ok(RequestVerifier::KeySet(found))
    }

    /// Checks `signature` (a detached JWS) against `payload`.
    pub fn verify(&self, payload: &Value, signature: Option<&str>) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        let (encoded_header, encoded_signature) = signature
            .split_once("..")
            .filter(|(header, signature)| !header.contains('.') && !signature.contains('.'))
            .ok_or_else(|| {
                SignatureError::Malformed(
                    "expected a detached JWS of the form HEADER..SIGNATURE".into(),
                )
            })?;
        let header = decode_header(encoded_header)?;
        let key = self.key_for(&header)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded_signature).map_err(|error| {
            SignatureError::Malformed(format!("signature is not base64url: {error}"))
        })?;
        let signature = Signature::from_slice(&bytes).map_err(|_| {
            SignatureError::Malformed(format!("signature is {} bytes; expected 64", bytes.len()))
        })?;
        key.verify_strict(
            signing_input(encoded_header, payload).as_bytes(),
            &signature,
        )
        .map_err(|_| SignatureError::Mismatch)
    }

    fn key_for(
        &self,
        header: &serde_json::Map<String, Value>,
    ) -> Result<&VerifyingKey, SignatureError> {
        match self {
            RequestVerifier::Single(key) => Ok(key),
            RequestVerifier::KeySet(keys) => {
                let key_id = header
                    .get("kid")
                    .and_then(Value::as_str)
                    .ok_or(SignatureError::MissingKeyId)?;
                keys.iter()
                    .find(|(id, _)| id == key_id)
                    .map(|(_, key)| key)
                    .ok_or_else(|| SignatureError::UnknownKeyId(key_id.chars().take(128).collect()))
            }
        }
    }
}

/// Decodes and checks a JWS protected header.
fn decode_header(encoded: &str) -> Result<serde_json::Map<String, Value>, SignatureError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|error| SignatureError::Malformed(format!("header is not base64url: {error}")))?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(SignatureError::Malformed(
            "header is not a JSON object".into(),
        ));
    };
    match header.get("alg").and_then(Value::as_str) {
        Some(ALGORITHM) => {}
        Some(other) => return Err(SignatureError::Algorithm(other.chars().take(32).collect())),
        None => return Err(SignatureError::Malformed("header has no alg".into())),
    }
    // `crit` names extensions the verifier must understand (RFC 7515, 4.1.11);
    // this one understands none, `b64: false` included.
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(SignatureError::Malformed(
            "header uses crit or b64, which this runner does not support".into(),
        ));
    }
    Ok(header)
}

/// Decodes 32 raw Ed25519 key bytes from base64 in either alphabet.
fn decode_raw_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or("not a PEM public key and not base64 of the 32 raw key bytes")?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "the key is {} bytes; an Ed25519 public key is 32",
            bytes.len()
        )
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid Ed25519 public key".to_string())
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signer(seed: u8, key_id: Option<&str>) -> RequestSigner {
        RequestSigner::new(
            SigningKey::from_bytes(&[seed; 32]),
            key_id.map(String::from),
        )
    }

    fn payload() -> Value {
        json!({"runId": "r1", "pipelineFqn": "svc.p", "pipelineType": "metadata",
               "config": {"source": {"b": 1, "a": [true, null, "x\n"]}}})
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let value = json!({"b": {"z": 1, "a": "é\u{1}"}, "a": [2, {"d": 0, "c": 0}]});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":[2,{"c":0,"d":0}],"b":{"a":"é\u0001","z":1}}"#
        );
    }

    #[test]
    fn signed_payload_verifies() {
        let signer = signer(7, None);
        let verifier = RequestVerifier::Single(signer.verifying_key());
        let signature = signer.sign(&payload());
        assert_eq!(verifier.verify(&payload(), Some(&signature)), Ok(()));
    }

    #[test]
    fn key_order_does_not_matter() {
        let signer = signer(7, None);
        let verifier = RequestVerifier::Single(signer.verifying_key());
        let signature = signer.sign(&payload());
        let reordered: Value = serde_json::from_str(
            r#"{"config":{"source":{"a":[true,null,"x\n"],"b":1}},"pipelineType":"metadata",
                "pipelineFqn":"svc.p","runId":"r1"}"#,
        )
        .unwrap();
        assert_eq!(verifier.verify(&reordered, Some(&signature)), Ok(()));
    }

    #[test]
    fn tampered_payload_fails() {
        let signer = signer(7, None);
        let verifier = RequestVerifier::Single(signer.verifying_key());
        let signature = signer.sign(&payload());
        let mut tampered = payload();
        tampered["pipelineType"] = json!("usage");
        assert_eq!(
            verifier.verify(&tampered, Some(&signature)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_key_and_missing_fail() {
        let verifier = RequestVerifier::Single(signer(8, None).verifying_key());
        let signature = signer(7, None).sign(&payload());
        assert_eq!(
            verifier.verify(&payload(), Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verifier.verify(&payload(), None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn key_set_picks_key_by_kid() {
        let verifier = RequestVerifier::KeySet(vec![
            ("old".into(), signer(1, None).verifying_key()),
            ("new".into(), signer(2, None).verifying_key()),
        ]);
        let signature = signer(2, Some("new")).sign(&payload());
        assert_eq!(verifier.verify(&payload(), Some(&signature)), Ok(()));
        let unknown = signer(2, Some("other")).sign(&payload());
        assert_eq!(
            verifier.verify(&payload(), Some(&unknown)),
            Err(SignatureError::UnknownKeyId("other".into()))
        );
        let no_kid = signer(2, None).sign(&payload());
        assert_eq!(
            verifier.verify(&payload(), Some(&no_kid)),
            Err(SignatureError::MissingKeyId)
        );
    }

    #[test]
    fn other_algorithm_is_rejected() {
        let verifier = RequestVerifier::Single(signer(7, None).verifying_key());
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert_eq!(
            verifier.verify(&payload(), Some(&format!("{header}.."))),
            Err(SignatureError::Algorithm("none".into()))
        );
    }

    #[test]
    fn key_files_load() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let private = dir.path().join("key.pem");
        std::fs::write(
            &private,
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let public = dir.path().join("key.pub");
        std::fs::write(
            &public,
            key.verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let raw = dir.path().join("key.b64");
        std::fs::write(&raw, STANDARD.encode(key.verifying_key().as_bytes())).unwrap();
        let jwks = dir.path().join("jwks.json");
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        std::fs::write(
            &jwks,
            json!({"keys": [{"kty": "RSA", "kid": "skip"},
                            {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x}]})
            .to_string(),
        )
        .unwrap();

        let signer = RequestSigner::load(&private, Some("k1".into())).unwrap();
        let signature = signer.sign(&payload());
        for verifier in [
            RequestVerifier::load_public_key(&public).unwrap(),
            RequestVerifier::load_public_key(&raw).unwrap(),
            RequestVerifier::load_jwks(&jwks).unwrap(),
        ] {
            assert_eq!(verifier.verify(&payload(), Some(&signature)), Ok(()));
        }
        let error = RequestVerifier::load_public_key(&private).unwrap_err();
        assert!(error.to_string().contains("key.pem"), "{error}");
    }
}
