//! Runner log output, redacted.
//!
//! Every formatted event passes through the redactor before it reaches
//! stderr, so a secret that slips into a log message is masked there too.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::redact::Redactor;

/// A writer factory that redacts each event before writing it to stderr.
#[derive(Clone)]
pub struct RedactingStderr {
    redactor: Arc<Redactor>,
}

/// Buffers one formatted event and writes it redacted when dropped.
pub struct EventWriter {
    redactor: Arc<Redactor>,
    buffer: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let redacted = self.redactor.redact_bytes(&self.buffer);
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(&redacted);
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            redactor: Arc::clone(&self.redactor),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, json: bool, redactor: Arc<Redactor>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = RedactingStderr { redactor };
    // Colours only on a terminal, because a log file or collector would
    // otherwise receive escape codes around every field name.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, quickstart) keeps the first subscriber.
    let _ = result;
}

/// Routes panic messages through the redactor before they reach stderr, in
/// place of the default hook, which prints them as they are.
pub fn install_panic_hook(redactor: Arc<Redactor>) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string();
        eprintln!("{}", redactor.redact(&message));
    }));
}
