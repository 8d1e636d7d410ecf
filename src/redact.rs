//! The streaming redactor: every byte that leaves the runner passes through it.
//!
//! Secret values are registered the moment they are fetched (or, for literal
//! values in secret fields, the moment a config is read). A registered value
//! is masked in its plain form, in each of its lines when it spans several,
//! and in its common encodings: JSON string escaping, URL percent-encoding and
//! base64 (standard and URL-safe alphabets, all three byte alignments).
//!
//! The redactor is a leaf: it imports no other part of the runner.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Text that replaces every masked value.
pub const MASK: &str = "******";

/// Default minimum length in bytes of a value worth masking. Shorter values
/// would mask common words and numbers all over the output.
pub const DEFAULT_MIN_SECRET_LEN: usize = 6;

/// Marker appended to a line that was cut at the line cap.
pub const TRUNCATED_MARK: &str = " [truncated]";

/// Outcome of registering one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The value is masked from now on.
    Registered,
    /// The value was already registered.
    AlreadyKnown,
    /// The value is shorter than the minimum and is not masked.
    TooShort,
}

/// A thread-safe set of secret values and the matcher built from them.
#[derive(Debug)]
pub struct Redactor {
    min_len: usize,
    state: RwLock<Arc<Matcher>>,
}

#[derive(Debug, Default)]
struct Matcher {
    values: BTreeSet<String>,
    patterns: Vec<String>,
    automaton: Option<AhoCorasick>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(DEFAULT_MIN_SECRET_LEN)
    }
}

impl Redactor {
    /// Creates an empty redactor that ignores values shorter than `min_len` bytes.
    pub fn new(min_len: usize) -> Self {
        Redactor {
            min_len: min_len.max(1),
            state: RwLock::new(Arc::new(Matcher::default())),
        }
    }

    /// Returns the minimum length of a value that is masked.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// Registers a secret value so that it and its encoded forms are masked.
    pub fn register(&self, value: &str) -> Registration {
        if value.trim().len() < self.min_len {
            return Registration::TooShort;
        }
        // Registrations are rare (one per fetched value), so the matcher is
        // rebuilt under the write lock; readers keep the previous one meanwhile.
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.values.contains(value) {
            return Registration::AlreadyKnown;
        }
        let mut values = guard.values.clone();
        values.insert(value.to_string());
        let mut patterns: BTreeSet<String> = guard.patterns.iter().cloned().collect();
        patterns.extend(forms_of(value, self.min_len));
        *guard = Arc::new(Matcher::build(values, patterns.into_iter().collect()));
        Registration::Registered
    }

    /// Returns the number of registered values.
    pub fn len(&self) -> usize {
        self.matcher().values.len()
    }

    /// Returns true when no value is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Masks every registered value in `text`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let matcher = self.matcher();
        match &matcher.automaton {
            Some(automaton) if automaton.is_match(text) => {
                Cow::Owned(automaton.replace_all(text, &vec![MASK; matcher.patterns.len()]))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// Masks every registered value in raw bytes.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let matcher = self.matcher();
        match &matcher.automaton {
            Some(automaton) if automaton.is_match(bytes) => {
                let masks = vec![MASK.as_bytes(); matcher.patterns.len()];
                Cow::Owned(automaton.replace_all_bytes(bytes, &masks))
            }
            _ => Cow::Borrowed(bytes),
        }
    }

    /// Creates a line splitter for one output stream; lines longer than
    /// `max_line` bytes are cut and marked.
    pub fn lines(self: &Arc<Self>, max_line: usize) -> LineRedactor {
        LineRedactor {
            redactor: Arc::clone(self),
            max_line: max_line.max(64),
            buffer: Vec::new(),
            discarding: false,
        }
    }

    fn matcher(&self) -> Arc<Matcher> {
        Arc::clone(
            &self
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Masks a tail of `text` that is the start of a registered form, because
    /// the rest of that form was cut off and would not match on its own.
    fn mask_partial_tail(&self, text: &mut Vec<u8>) {
        let matcher = self.matcher();
        let mut longest = 0;
        for pattern in &matcher.patterns {
            let pattern = pattern.as_bytes();
            let max = pattern.len().saturating_sub(1).min(text.len());
            for len in (longest + 1..=max).rev() {
                if text.ends_with(&pattern[..len]) {
                    longest = len;
                    break;
                }
            }
        }
        if longest > 0 {
            text.truncate(text.len() - longest);
            text.extend_from_slice(MASK.as_bytes());
        }
    }
}

impl Matcher {
    fn build(values: BTreeSet<String>, patterns: Vec<String>) -> Self {
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok();
        Matcher {
            values,
            patterns,
            automaton,
        }
    }
}

/// Returns the plain and encoded forms of `value` to mask, each at least
/// `min_len` bytes long.
fn forms_of(value: &str, min_len: usize) -> Vec<String> {
    let mut forms = vec![value.to_string()];

    // A multi-line value is printed line by line as often as whole.
    if value.contains('\n') {
        forms.extend(
            value
                .lines()
                .map(|line| line.trim_end_matches('\r').to_string()),
        );
    }

    // JSON string escaping, as in a config or an event payload.
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = &json[1..json.len().saturating_sub(1)];
    forms.push(json.to_string());
    // Encoders that write ASCII only, such as Python's json.dumps by default,
    // escape every other character as \uXXXX in UTF-16. Python writes
    // lowercase hex digits and some Java libraries write uppercase ones.
    if !value.is_ascii() {
        forms.push(json_ascii_escape(json, false));
        forms.push(json_ascii_escape(json, true));
    }

    forms.extend(percent_forms(value));

    forms.extend(base64_cores(value.as_bytes()));
    forms.retain(|form| form.len() >= min_len);
    forms.sort();
    forms.dedup();
    forms
}

/// Rewrites the non-ASCII characters of a JSON-escaped string as `\uXXXX`
/// escapes, with a surrogate pair for characters beyond U+FFFF.
fn json_ascii_escape(json: &str, uppercase: bool) -> String {
    let mut escaped = String::with_capacity(json.len() * 2);
    for c in json.chars() {
        if c.is_ascii() {
            escaped.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            if uppercase {
                escaped.push_str(&format!("\\u{unit:04X}"));
            } else {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    escaped
}

/// Returns `value` percent-encoded the ways common encoders write it: every
/// set in [`PERCENT_SETS`], with `+` for spaces where form encoders use it,
/// and with upper- and lowercase hex digits.
fn percent_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for (set, plus_for_space) in PERCENT_SETS {
        let mut encoded = percent_encoding::utf8_percent_encode(value, set).to_string();
        if *plus_for_space {
            encoded = encoded.replace("%20", "+");
        }
        forms.push(lowercase_hex(&encoded));
        forms.push(encoded);
    }
    forms
}

/// Rewrites the hex digits of every `%XX` escape in lowercase.
fn lowercase_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Percent-encoding sets of common encoders, and whether they write a
/// space as `+`.
const PERCENT_SETS: &[(&percent_encoding::AsciiSet, bool)] = &[
    // Every byte but letters and digits, as percent-encoding crates do by default.
    (percent_encoding::NON_ALPHANUMERIC, false),
    (percent_encoding::NON_ALPHANUMERIC, true),
    // RFC 3986 unreserved characters kept: Python `quote(safe='')` and `quote_plus`.
    (UNRESERVED, false),
    (UNRESERVED, true),
    // JavaScript `encodeURIComponent`.
    (URI_COMPONENT, false),
    // WHATWG application/x-www-form-urlencoded, as HTML forms send it.
    (FORM, true),
    // The userinfo part of a URL, as in a connection string.
    (USERINFO, false),
];

const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const URI_COMPONENT: &percent_encoding::AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*');

const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Characters that URL libraries percent-encode in the userinfo part.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Returns, for each of the three byte alignments and both alphabets, the
/// base64 characters that depend on the value's bytes alone.
///
/// A value that starts `a` bytes into a 3-byte group shares its first
/// characters with the bytes before it and its last group with the bytes
/// after it. Only the characters in between are the same at every offset.
/// They appear in both the padded and the unpadded encoding.
fn base64_cores(value: &[u8]) -> Vec<String> {
    let mut cores = Vec::new();
    for align in 0..3usize {
        let mut input = vec![0u8; align];
        input.extend_from_slice(value);
        let skip = match align {
            0 => 0,
            1 => 2,
            _ => 3,
        };
        let total = input.len();
        let keep = (total / 3) * 4
            + match total % 3 {
                0 => 0,
                1 => 1,
                _ => 2,
            };
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&input);
            if keep > skip {
                cores.push(encoded[skip..keep].to_string());
            }
        }
    }
    cores
}

/// One redacted output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedLine {
    pub text: String,
    pub truncated: bool,
}

/// Splits one output stream into redacted lines.
///
/// Bytes are held until a newline arrives, so a value written in several
/// pieces is matched whole. A line longer than the cap keeps its first
/// `max_line` bytes. The rest of it is dropped without being buffered, so
/// memory stays bounded whatever the child writes.
#[derive(Debug)]
pub struct LineRedactor {
    redactor: Arc<Redactor>,
    max_line: usize,
    buffer: Vec<u8>,
    discarding: bool,
}

impl LineRedactor {
    /// Feeds a chunk of output and returns the lines it completes.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<RedactedLine> {
        let mut lines = Vec::new();
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&byte| byte == b'\n');
            let (piece, rest, ends_line) = match newline {
                Some(at) => (&chunk[..at], &chunk[at + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            chunk = rest;

            if !self.discarding {
                let room = self.max_line - self.buffer.len();
                if piece.len() > room {
                    self.buffer.extend_from_slice(&piece[..room]);
                    lines.push(self.emit(true));
                    self.discarding = true;
                } else {
                    self.buffer.extend_from_slice(piece);
                }
            }
            if ends_line {
                if self.discarding {
                    self.discarding = false;
                } else {
                    lines.push(self.emit(false));
                }
            }
        }
        lines
    }

    /// Returns the last line when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<RedactedLine> {
        if self.discarding || self.buffer.is_empty() {
            self.discarding = false;
            self.buffer.clear();
            return None;
        }
        Some(self.emit(false))
    }

    fn emit(&mut self, truncated: bool) -> RedactedLine {
        let mut raw = std::mem::take(&mut self.buffer);
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        let mut redacted = self.redactor.redact_bytes(&raw).into_owned();
        if truncated {
            self.redactor.mask_partial_tail(&mut redacted);
        }
        let mut text = String::from_utf8_lossy(&redacted).into_owned();
        if truncated {
            text.push_str(TRUNCATED_MARK);
        }
        RedactedLine { text, truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: &str = "Tr1cky/Pa55+word=\"x\"";

    #[test]
    fn other_percent_encoders_are_masked() {
        // Found by the redactor property test: these encoders keep some
        // punctuation that the NON_ALPHANUMERIC and userinfo forms escape.
        let secret = "pa$$-w0rd (x)!";
        let redactor = redactor_with(&[secret]);
        for encoded in [
            // JavaScript encodeURIComponent.
            "pa%24%24-w0rd%20(x)!",
            // Python quote(safe='') with lowercase hex, and quote_plus.
            "pa%24%24-w0rd%20%28x%29%21",
            "pa%24%24-w0rd+%28x%29%21",
            "pa%24%24-w0rd+%28x%29%21".to_ascii_lowercase().as_str(),
            // HTML form encoding.
            "pa%24%24-w0rd+%28x%29%21",
        ] {
            let line = format!("url=https://db/?p={encoded}&x=1");
            assert_eq!(
                redactor.redact(&line),
                format!("url=https://db/?p={MASK}&x=1"),
                "{encoded}"
            );
        }
    }

    fn redactor_with(values: &[&str]) -> Arc<Redactor> {
        let redactor = Arc::new(Redactor::default());
        for value in values {
            redactor.register(value);
        }
        redactor
    }

    fn collect(redactor: &Arc<Redactor>, chunks: &[&[u8]], max_line: usize) -> Vec<RedactedLine> {
        let mut lines = redactor.lines(max_line);
        let mut out: Vec<RedactedLine> =
            chunks.iter().flat_map(|chunk| lines.push(chunk)).collect();
        out.extend(lines.finish());
        out
    }

    #[test]
    fn plain_value_is_masked() {
        let redactor = redactor_with(&[TRICKY]);
        let text = format!("password={TRICKY} ok");
        assert_eq!(redactor.redact(&text), format!("password={MASK} ok"));
    }

    #[test]
    fn short_value_is_not_registered() {
        let redactor = Redactor::default();
        assert_eq!(redactor.register("abc"), Registration::TooShort);
        assert_eq!(redactor.redact("abc"), "abc");
        assert!(redactor.is_empty());
    }

    #[test]
    fn split_writes_are_joined() {
        let redactor = redactor_with(&[TRICKY]);
        let bytes = TRICKY.as_bytes();
        let lines = collect(
            &redactor,
            &[&bytes[..4], &bytes[4..11], &bytes[11..], b"\n"],
            1024,
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, MASK);
    }

    #[test]
    fn multi_line_value_is_masked_per_line() {
        let redactor = redactor_with(&["line-one-secret\nline-two-secret"]);
        let lines = collect(&redactor, &[b"line-one-secret\nline-two-secret\n"], 1024);
        let texts: Vec<_> = lines.iter().map(|line| line.text.as_str()).collect();
        assert_eq!(texts, vec![MASK, MASK]);
    }

    #[test]
    fn encoded_forms_are_masked() {
        let redactor = redactor_with(&[TRICKY]);
        let json = serde_json::to_string(TRICKY).unwrap();
        let url = percent_encoding::utf8_percent_encode(TRICKY, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        let mut samples = vec![json, format!("mysql://u:{url}@host")];
        for prefix in ["", "a", "ab"] {
            let input = format!("{prefix}{TRICKY}");
            samples.push(base64::engine::general_purpose::STANDARD.encode(&input));
            samples.push(STANDARD_NO_PAD.encode(&input));
            samples.push(URL_SAFE_NO_PAD.encode(format!("{input}tail")));
        }
        for sample in samples {
            let out = redactor.redact(&sample);
            assert!(out.contains(MASK), "not masked: {sample}");
        }
    }

    #[test]
    fn ascii_only_json_escapes_are_masked() {
        let redactor = redactor_with(&["Pässwörd-🔑"]);
        for sample in [
            r#"{"password": "P\u00e4ssw\u00f6rd-\ud83d\udd11"}"#,
            r#"{"password": "P\u00E4ssw\u00F6rd-\uD83D\uDD11"}"#,
        ] {
            let out = redactor.redact(sample);
            assert_eq!(
                out,
                format!(r#"{{"password": "{MASK}"}}"#),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn huge_line_is_cut_and_secret_dropped() {
        let redactor = redactor_with(&[TRICKY]);
        let mut lines = redactor.lines(1024);
        let block = vec![b'x'; 1 << 20];
        let mut out = Vec::new();
        for _ in 0..50 {
            out.extend(lines.push(&block));
        }
        out.extend(lines.push(TRICKY.as_bytes()));
        out.extend(lines.push(b"\nnext\n"));
        out.extend(lines.finish());
        assert_eq!(out.len(), 2);
        assert!(out[0].truncated);
        assert!(out[0].text.ends_with(TRUNCATED_MARK));
        assert!(out[0].text.len() <= 1024 + TRUNCATED_MARK.len());
        assert_eq!(out[1].text, "next");
    }

    #[test]
    fn cut_inside_secret_masks_the_kept_part() {
        let redactor = redactor_with(&[TRICKY]);
        let line = format!("{}{}\n", "y".repeat(60), TRICKY);
        let out = collect(&redactor, &[line.as_bytes()], 70);
        assert!(out[0].truncated);
        assert!(!out[0].text.contains(&TRICKY[..6]), "{}", out[0].text);
    }

    #[test]
    fn crlf_and_final_partial_line() {
        let redactor = redactor_with(&[]);
        let out = collect(&redactor, &[b"a\r\nb"], 1024);
        let texts: Vec<_> = out.iter().map(|line| line.text.as_str()).collect();
        assert_eq!(texts, vec!["a", "b"]);
    }
}
