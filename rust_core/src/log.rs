//! The engine's log lines: one JSON object per line on stderr, like the Python layers' structured logs.

/// Logs a warning of the engine thread.
pub(crate) fn warn(message: &str) {
    let message = serde_json::to_string(message).expect("a string always serialises");
    eprintln!("{{\"level\":\"warning\",\"component\":\"engine\",\"message\":{message}}}");
}
