//! The log output: tracing's human-readable lines (`[log] format = text`, the default) or one
//! JSON object per line (`json`) for log collectors.
//!
//! A JSON line holds `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, and each of
//! the event's other fields under its own name. A field named like one of those four keeps
//! its value under `field.<name>`. Numbers and booleans stay JSON numbers and booleans; other
//! values are their `Debug` text. Both formats go to stderr; stdout carries only the READY
//! line.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber: `filter` (EnvFilter syntax, `info` when invalid), `format`,
/// to stderr.
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(JsonLines).init(),
    }
}

/// One JSON object per event (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// The names the line itself uses.
const RESERVED: [&str; 4] = ["timestamp", "level", "target", "message"];

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        event.record(&mut Fields(&mut line));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields into the line.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let key = if name == "message" {
            name.to_string()
        } else if RESERVED.contains(&name) {
            format!("field.{name}")
        } else {
            name.to_string()
        };
        self.0.insert(key, value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, v);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(emit: impl FnOnce()) -> Vec<Value> {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn one_json_object_per_event_with_typed_fields() {
        let err = std::io::Error::other("disk \"full\"\nnow");
        let lines = lines_of(|| {
            tracing::info!(port = 3300u16, ok = true, ratio = 0.5, peer = ?"a b", "listening on {}", "x");
            tracing::warn!(error = %err, level = -3, target = "t", "store failed");
            tracing::error!(nan = f64::NAN, "odd");
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        let a = &lines[0];
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["target"], module_path!());
        assert_eq!(a["message"], "listening on x");
        assert_eq!(a["port"], 3300);
        assert_eq!(a["ok"], true);
        assert_eq!(a["ratio"], 0.5);
        assert_eq!(a["peer"], "\"a b\"");
        let ts = a["timestamp"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.contains('T'),
            "{ts}"
        );
        let b = &lines[1];
        assert_eq!(b["level"], "WARN");
        // Quotes and newlines in a value stay inside one line, escaped.
        assert_eq!(b["error"], "disk \"full\"\nnow");
        // Fields named like the line's own keys do not replace them.
        assert_eq!(b["field.level"], -3);
        assert_eq!(b["field.target"], "t");
        assert_eq!(b["target"], module_path!());
        assert_eq!(lines[2]["nan"], "NaN");
    }
}
