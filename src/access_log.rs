//! One line per request: JSON lines or nginx's `combined` format, to stdout or a file.
//!
//! The line is written when the response body has been sent (or the client went away), so
//! `bytes` is what was really sent, as nginx's `$body_bytes_sent`.

use crate::config::{Config, Origin};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`.
    Combined,
}

impl AccessLogFormat {
    pub fn parse(name: &str) -> Option<AccessLogFormat> {
        match name {
            "json" => Some(AccessLogFormat::Json),
            "combined" => Some(AccessLogFormat::Combined),
            _ => None,
        }
    }
}

/// The access log asked for with `--access-log` and `--access-log-file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogChoice {
    pub format: AccessLogFormat,
    /// Stdout without one.
    pub file: Option<PathBuf>,
}

impl AccessLogChoice {
    /// The flags' access log: `--access-log-file` alone means the combined format.
    pub fn from_flags(
        format: Option<&str>,
        file: Option<PathBuf>,
    ) -> Result<Option<AccessLogChoice>, AccessLogError> {
        let format = match format {
            None if file.is_none() => return Ok(None),
            None => AccessLogFormat::Combined,
            Some(name) => AccessLogFormat::parse(name)
                .ok_or_else(|| AccessLogError::UnknownFormat(name.to_string()))?,
        };
        Ok(Some(AccessLogChoice { format, file }))
    }
}

/// Why the access log cannot be set up; each names the flag or config line to fix.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("--access-log: unknown format \"{0}\": use json or combined")]
    UnknownFormat(String),
    #[error(
        "--access-log-file: cannot open {}",
        file.as_deref().unwrap_or(Path::new("stdout")).display()
    )]
    OpenFlagFile {
        file: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// nginx's `access_log` in the config.
    #[error("{origin}: cannot open {}", file.display())]
    OpenConfigFile {
        origin: Origin,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the access log the flags ask for, else the one the config names (nginx's
/// `access_log`, in the combined format), else none.
pub fn open_chosen(
    flags: Option<&AccessLogChoice>,
    config: &Config,
) -> Result<Option<Arc<AccessLog>>, AccessLogError> {
    if let Some(choice) = flags {
        let log = AccessLog::open(choice.format, choice.file.as_deref()).map_err(|source| {
            AccessLogError::OpenFlagFile {
                file: choice.file.clone(),
                source,
            }
        })?;
        return Ok(Some(Arc::new(log)));
    }
    match &config.access_log {
        Some(file) => {
            let log = AccessLog::open(AccessLogFormat::Combined, Some(&file.value)).map_err(
                |source| AccessLogError::OpenConfigFile {
                    origin: file.origin.clone(),
                    file: file.value.clone(),
                    source,
                },
            )?;
            Ok(Some(Arc::new(log)))
        }
        None => Ok(None),
    }
}

/// Where access log lines go.
pub struct AccessLog {
    format: AccessLogFormat,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl AccessLog {
    /// Logs to `file` (appending, created if missing) or, without one, to stdout.
    pub fn open(format: AccessLogFormat, file: Option<&Path>) -> std::io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match file {
            Some(path) => Box::new(std::io::LineWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => Box::new(std::io::LineWriter::new(std::io::stdout())),
        };
        Ok(AccessLog {
            format,
            sink: Mutex::new(sink),
        })
    }

    fn write(&self, record: &AccessRecord, bytes: u64) {
        let line = match self.format {
            AccessLogFormat::Json => record.json(bytes),
            AccessLogFormat::Combined => record.combined(bytes),
        };
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let _ = sink.write_all(line.as_bytes());
    }
}

/// What is known about a request before its response body is sent.
pub struct AccessRecord {
    pub time: SystemTime,
    pub started: Instant,
    pub listener: String,
    pub client: SocketAddr,
    pub client_subject: Option<String>,
    pub method: String,
    pub target: String,
    pub version: String,
    pub status: u16,
    pub referer: String,
    pub user_agent: String,
    pub upstream: String,
    pub upstream_time: Option<Duration>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl AccessRecord {
    fn json(&self, bytes: u64) -> String {
        let time = time::OffsetDateTime::from(self.time);
        let value = serde_json::json!({
            "time": format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                time.year(), time.month() as u8, time.day(), time.hour(), time.minute(),
                time.second(), time.millisecond()
            ),
            "listener": self.listener,
            "client": self.client.to_string(),
            "client_subject": self.client_subject,
            "method": self.method,
            "path": self.target,
            "status": self.status,
            "bytes": bytes,
            "duration_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            "upstream": self.upstream,
            "upstream_ms": self.upstream_time.map(|t| t.as_secs_f64() * 1000.0),
        });
        format!("{value}\n")
    }

    fn combined(&self, bytes: u64) -> String {
        let time = time::OffsetDateTime::from(self.time);
        // nginx's escaping: `"` and control characters as \xNN.
        let quoted = |s: &str| crate::logging::escape(s).replace('"', "\\x22");
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                quoted(s)
            }
        };
        format!(
            "{} - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"{} {} {}\" {} {bytes} \"{}\" \"{}\"\n",
            self.client.ip(),
            time.day(),
            MONTHS[time.month() as usize - 1],
            time.year(),
            time.hour(),
            time.minute(),
            time.second(),
            self.method,
            quoted(&self.target),
            self.version,
            self.status,
            dash(&self.referer),
            dash(&self.user_agent),
        )
    }
}

/// A response body that counts what it sends and writes the access log line at its end.
pub struct Logged<B> {
    inner: B,
    sent: u64,
    /// Boxed so that a listener without an access log moves no record with each response.
    pending: Option<Box<(Arc<AccessLog>, AccessRecord)>>,
}

impl<B> Logged<B> {
    pub fn new(inner: B, log: Arc<AccessLog>, record: AccessRecord) -> Logged<B> {
        Logged {
            inner,
            sent: 0,
            pending: Some(Box::new((log, record))),
        }
    }

    /// The body as it is, for a listener that keeps no access log.
    pub fn off(inner: B) -> Logged<B> {
        Logged {
            inner,
            sent: 0,
            pending: None,
        }
    }

    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            let (log, record) = &*pending;
            log.write(record, self.sent);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Logged<B> {
    /// A client that goes away mid-body still gets its line, with the bytes sent so far.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_alone_means_combined() {
        assert_eq!(AccessLogChoice::from_flags(None, None).unwrap(), None);
        let file = Some(PathBuf::from("access.log"));
        let choice = AccessLogChoice::from_flags(None, file.clone())
            .unwrap()
            .unwrap();
        assert_eq!(choice.format, AccessLogFormat::Combined);
        assert_eq!(choice.file, file);
        let choice = AccessLogChoice::from_flags(Some("json"), None)
            .unwrap()
            .unwrap();
        assert_eq!(choice.format, AccessLogFormat::Json);
        let error = AccessLogChoice::from_flags(Some("xml"), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--access-log: unknown format \"xml\": use json or combined"
        );
    }
}
