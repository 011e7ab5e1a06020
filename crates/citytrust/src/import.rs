//! `citytrust import FILE --dataset ID`: publish a file as a new version of a
//! dataset through a running trust's API, streaming it with a progress bar
//! (bytes, rows per second for line formats, time left).
//!
//! It goes through the API rather than the database so that the server stays
//! the one writer of versions and of the transparency log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// What to send and where.
pub struct ImportArgs<'a> {
    pub url: &'a str,
    pub token: &'a str,
    pub dataset: &'a str,
    pub file: &'a Path,
    /// A media type, or `None` to go by the file name.
    pub media_type: Option<&'a str>,
    pub on_error: &'a str,
    pub types: Option<&'a str>,
    /// Draw the progress bar (on a terminal), else print a line now and then.
    pub show_progress: bool,
}

/// The media type and compression of a file, by its name.
pub fn media_type_of(file: &Path) -> Option<(&'static str, bool)> {
    let name = file.file_name()?.to_string_lossy().to_ascii_lowercase();
    let (name, gzip) = match name.strip_suffix(".gz") {
        Some(inner) => (inner.to_string(), true),
        None => (name, false),
    };
    let ext = name.rsplit_once('.')?.1;
    let media = match ext {
        "csv" | "txt" => "text/csv",
        "tsv" | "tab" => "text/tab-separated-values",
        "json" => "application/json",
        "ndjson" | "jsonl" => "application/x-ndjson",
        "geojson" => "application/geo+json",
        "parquet" => "application/vnd.apache.parquet",
        _ => return None,
    };
    Some((media, gzip))
}

/// Sign in with a username and password for a short-lived token.
pub async fn token_for(url: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/token", url.trim_end_matches('/')))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "signing in failed: {}",
            problem_text(&body, status.as_u16())
        );
    }
    body["token"]
        .as_str()
        .map(str::to_string)
        .context("the server's answer had no token")
}

/// Publish the file; returns the new version as the server describes it.
pub async fn import(args: ImportArgs<'_>) -> anyhow::Result<Value> {
    let (media, gzip) = match args.media_type {
        Some(m) => (m, args.file.to_string_lossy().ends_with(".gz")),
        None => media_type_of(args.file).with_context(|| {
            format!(
                "cannot tell the format of {}: name it .csv, .tsv, .json, .ndjson, .geojson or .parquet \
                 (optionally .gz), or pass --format",
                args.file.display()
            )
        })?,
    };
    let file = tokio::fs::File::open(args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().await?.len();
    let counts_lines = !gzip
        && matches!(
            media,
            "text/csv" | "text/tab-separated-values" | "application/x-ndjson"
        );

    let bar = ProgressBar::with_draw_target(
        Some(size),
        if args.show_progress {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {msg} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    let tracker = Tracker {
        bar: bar.clone(),
        started,
        counts_lines,
        lines: 0,
        quiet_report_at: Instant::now(),
        quiet: !args.show_progress,
        size,
    };
    let stream = futures::stream::unfold((file, tracker), |(mut file, mut tracker)| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                tracker.advance(&buf);
                Some((Ok::<_, std::io::Error>(buf), (file, tracker)))
            }
            Err(e) => Some((Err(e), (file, tracker))),
        }
    });

    let mut query = vec![("on_error", args.on_error.to_string())];
    if let Some(t) = args.types {
        query.push(("types", t.to_string()));
    }
    let mut request = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/datasets/{}/versions",
            args.url.trim_end_matches('/'),
            args.dataset
        ))
        .query(&query)
        .bearer_auth(args.token)
        .header(reqwest::header::CONTENT_TYPE, media)
        .body(reqwest::Body::wrap_stream(stream));
    if gzip {
        request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
    }
    let waiting = {
        let bar = bar.clone();
        tokio::spawn(async move {
            // Once every byte is sent the server checks the rows and measures quality.
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if bar.position() >= bar.length().unwrap_or(0) {
                    bar.set_message("sent; the server is checking rows and measuring quality");
                    bar.enable_steady_tick(Duration::from_millis(120));
                    break;
                }
            }
        })
    };
    let res = request.send().await;
    waiting.abort();
    bar.finish_and_clear();
    let res =
        res.with_context(|| format!("the upload to {} failed; nothing was stored", args.url))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 201 {
        bail!("{}", problem_text(&body, status.as_u16()));
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let rows = body["rows"].as_u64().unwrap_or(0);
    eprintln!(
        "sent {} in {seconds:.1} s ({:.0} rows/s)",
        human_bytes(size),
        rows as f64 / seconds
    );
    Ok(body)
}

/// Keeps the bar's position, and the row count for line formats.
struct Tracker {
    bar: ProgressBar,
    started: Instant,
    counts_lines: bool,
    lines: u64,
    quiet_report_at: Instant,
    quiet: bool,
    size: u64,
}

impl Tracker {
    fn advance(&mut self, chunk: &[u8]) {
        self.bar.inc(chunk.len() as u64);
        if self.counts_lines {
            self.lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            self.bar.set_message(format!(
                "~{} rows ({:.0} rows/s)",
                self.lines,
                self.lines as f64 / secs
            ));
        }
        if self.quiet && self.quiet_report_at.elapsed() >= Duration::from_secs(10) {
            self.quiet_report_at = Instant::now();
            eprintln!(
                "sent {} of {}",
                human_bytes(self.bar.position()),
                human_bytes(self.size)
            );
        }
    }
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A problem document as lines a person can act on.
pub fn problem_text(body: &Value, status: u16) -> String {
    let mut out = format!(
        "{} ({status})",
        body["detail"]
            .as_str()
            .or(body["title"].as_str())
            .unwrap_or("the server refused the upload")
    );
    if let Some(errors) = body["errors"].as_array() {
        for e in errors.iter().take(50) {
            let mut place = Vec::new();
            if let Some(l) = e["line"].as_u64() {
                place.push(format!("line {l}"));
            }
            if let Some(c) = e["column"].as_u64() {
                place.push(format!("column {c}"));
            }
            if let Some(f) = e["field"].as_str() {
                place.push(format!("field '{f}'"));
            }
            out.push_str(&format!(
                "\n  {}{}",
                if place.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", place.join(", "))
                },
                e["message"].as_str().unwrap_or("")
            ));
        }
        if let Some(total) = body["total_errors"].as_u64()
            && total > errors.len() as u64
        {
            out.push_str(&format!("\n  … and {} more", total - errors.len() as u64));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_file_names() {
        assert_eq!(
            media_type_of(Path::new("a/trips.csv")),
            Some(("text/csv", false))
        );
        assert_eq!(
            media_type_of(Path::new("trips.NDJSON.gz")),
            Some(("application/x-ndjson", true))
        );
        assert_eq!(
            media_type_of(Path::new("d.geojson")),
            Some(("application/geo+json", false))
        );
        assert_eq!(media_type_of(Path::new("notes.docx")), None);
        assert_eq!(media_type_of(Path::new("noextension")), None);
    }

    #[test]
    fn problems_name_line_and_column() {
        let body = serde_json::json!({
            "detail": "2 rows are bad",
            "errors": [{"line": 3, "column": 2, "field": "age", "message": "'x' is not an integer"}],
            "total_errors": 2
        });
        let text = problem_text(&body, 422);
        assert!(text.starts_with("2 rows are bad (422)"));
        assert!(text.contains("line 3, column 2, field 'age': 'x' is not an integer"));
        assert!(text.contains("… and 1 more"));
    }
}
