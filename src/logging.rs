//! Text logs a peer cannot forge lines in. Subjects, SANs, header names, paths and host names
//! come from peers and reach log messages; a DN holding a newline would otherwise start a new
//! line that looks like certgate's own. Every field of every event, and every value the access
//! log writes, goes through [`escape`], so one event is always one line.

use std::borrow::Cow;
use std::fmt::Write as _;
use tracing_subscriber::field::delimited::Delimited;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, FieldFn, Writer};

/// `text` with control characters (C0, DEL and C1, `\t` and `\n` included) written as nginx
/// writes them in its logs, `\xNN`; borrowed when there are none (the usual case).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(escaped, "\\x{:02X}", c as u32);
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
}

type FieldFormatter =
    fn(&mut Writer<'_>, &tracing::field::Field, &dyn std::fmt::Debug) -> std::fmt::Result;

/// The field formatter of certgate's text logs: the message as it is, other fields as
/// `name=value`, all escaped.
pub fn escaped_fields() -> Delimited<&'static str, FieldFn<FieldFormatter>> {
    let format: FieldFormatter = |writer, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{}", escape(&text)),
            name => write!(writer, "{name}={}", escape(&text)),
        }
    };
    debug_fn(format).delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_cannot_start_a_line() {
        assert_eq!(escape("CN=evil\nWARN forged"), "CN=evil\\x0AWARN forged");
        assert_eq!(
            escape("a\r\tb\x1b[31m\u{7f}\u{85}"),
            "a\\x0D\\x09b\\x1B[31m\\x7F\\x85"
        );
        assert!(matches!(
            escape("CN=plain, O=ü"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
