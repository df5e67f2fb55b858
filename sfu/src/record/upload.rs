//! Finished segments go to the edge, which keeps them in R2: each track's file, then
//! `segment.json` (the edge writes the recording's manifest from it). Every request is signed with
//! the control key over its method, path (with the query) and body. A file up to [`PART`] bytes
//! goes in one `PUT`; a larger one as an R2 multipart upload of equal [`PART`]-byte parts (R2
//! wants parts of at least 5 MiB, all but the last of one size). A failed segment is sent again
//! with backoff (1 s doubling to a minute) until the edge has it; then the local copy goes.
//! Segments left on disk by an earlier run (the SFU stopped before its upload was done) are sent
//! at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgemeet_shared::control;
use edgemeet_shared::recording::SegmentSummary;
use serde::Deserialize;
use tokio::sync::mpsc;

/// Bytes per multipart part (and the largest file sent in one request).
pub const PART: usize = 8 << 20;

/// [`PART`], or for tests `EDGEMEET_SFU_UPLOAD_PART` bytes (R2 itself wants ≥ 5 MiB).
fn part_size() -> usize {
    std::env::var("EDGEMEET_SFU_UPLOAD_PART")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n >= 1024)
        .unwrap_or(PART)
}
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Where the edge takes a recording's files: `{RECORDINGS_PATH}/{recording}/{segment}[/{file}]`.
pub const RECORDINGS_PATH: &str = "/api/sfu/recordings";

/// The uploader's side for the media workers: segments to send, and how many are not sent yet.
#[derive(Clone)]
pub struct Uploads {
    tx: mpsc::UnboundedSender<PathBuf>,
    /// Segments not yet tried once (queued, or their first upload under way).
    untried: Arc<AtomicUsize>,
}

impl Uploads {
    pub fn send(&self, segment_json: PathBuf) {
        self.untried.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(segment_json).is_err() {
            self.untried.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most `limit`) until every segment queued has been tried once: a stopping SFU
    /// uploads what it just finished. One the edge did not take stays on disk for the next start
    /// — a stop never waits out a backoff (a stale segment of a recording the edge does not know
    /// would hold every stop for the whole limit).
    pub async fn flushed(&self, limit: Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while self.untried.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// What the uploader counts for `/metrics`: bytes the edge took, and the time their uploads took.
#[derive(Clone, Default)]
pub struct UploadCounters {
    pub bytes: prometheus_client::metrics::counter::Counter,
    pub ms: prometheus_client::metrics::counter::Counter,
}

/// Starts the uploader (needs a tokio runtime): send it each `segment.json` written. Without an
/// edge, segments stay on disk.
pub fn spawn(
    edge: Option<String>,
    secret: String,
    dir: PathBuf,
    counters: UploadCounters,
) -> Uploads {
    let (tx, rx) = mpsc::unbounded_channel();
    let untried = Arc::new(AtomicUsize::new(0));
    // Before any worker records: segments from this moment on are this process's own.
    let since_ms = super::wall_us() / 1_000;
    tokio::spawn(run(
        edge,
        secret,
        dir,
        since_ms,
        rx,
        untried.clone(),
        counters,
    ));
    Uploads { tx, untried }
}

/// An upload id as a query value (R2's ids hold characters a query would read otherwise).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every `segment.json` under `dir` (`{recording}/{segment}/segment.json`), and those of segments
/// a killed SFU left unfinished, recovered first (`recover.rs`; one with nothing in it goes, one
/// that fails stays for the next start). A segment this process began (named `{sfu}-{ms}` with
/// `ms` at or after `since_ms`, this process's start) is being recorded, never touched.
fn left_over(dir: &Path, since_ms: u64) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for rec in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for seg in std::fs::read_dir(rec.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = seg.path().join("segment.json");
            if p.is_file() {
                found.push(p);
                continue;
            }
            let began = seg
                .file_name()
                .to_string_lossy()
                .rsplit('-')
                .next()
                .and_then(|ms| ms.parse::<u64>().ok());
            if began.is_none_or(|ms| ms >= since_ms) {
                continue;
            }
            if !seg.path().join(super::recover::PART_FILE).is_file() {
                continue;
            }
            match super::recover::recover_segment(&seg.path()) {
                super::recover::Recovered::Segment(p) => found.push(p),
                super::recover::Recovered::Nothing => remove_segment(&seg.path()),
                super::recover::Recovered::Failed(why) => {
                    tracing::warn!(segment = %seg.path().display(), why, "could not recover a recording's segment: tried again at the next start")
                }
            }
        }
    }
    found
}

/// Deletes a segment's directory, its `segment.part.json` first: a delete cut short never leaves
/// a directory that looks recoverable with some of its files gone.
fn remove_segment(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(super::recover::PART_FILE));
    let _ = std::fs::remove_file(dir.join("segment.json"));
    let _ = std::fs::remove_dir_all(dir);
}

async fn run(
    edge: Option<String>,
    secret: String,
    dir: PathBuf,
    since_ms: u64,
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
    untried: Arc<AtomicUsize>,
    counters: UploadCounters,
) {
    let Some(edge) = edge else {
        while let Some(p) = rx.recv().await {
            untried.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(segment = %p.display(), "no edge to upload the recording to: it stays on disk");
        }
        return;
    };
    let client = reqwest::Client::new();
    // Each segment with when it may go (again) and its backoff: one the edge refuses for now
    // waits on its own, never holding up the others.
    let now = tokio::time::Instant::now();
    let found = tokio::task::spawn_blocking(move || left_over(&dir, since_ms))
        .await
        .unwrap_or_default();
    let mut queue: Vec<Waiting> = found
        .into_iter()
        .map(|path| Waiting::new(path, now))
        .collect();
    untried.fetch_add(queue.len(), Ordering::SeqCst);
    if !queue.is_empty() {
        tracing::info!(
            segments = queue.len(),
            "uploading recordings left by an earlier run"
        );
    }
    loop {
        while let Ok(p) = rx.try_recv() {
            queue.push(Waiting::new(p, tokio::time::Instant::now()));
        }
        let now = tokio::time::Instant::now();
        // A segment never tried goes before old ones due again (a stop waits for the first).
        let due = queue
            .iter()
            .position(|w| w.at <= now && !w.tried)
            .or_else(|| queue.iter().position(|w| w.at <= now));
        let Some(i) = due else {
            let next = queue.iter().map(|w| w.at).min();
            tokio::select! {
                got = rx.recv() => match got {
                    Some(p) => queue.push(Waiting::new(p, tokio::time::Instant::now())),
                    None => return,
                },
                _ = tokio::time::sleep_until(next.unwrap_or(now + RETRY_MAX)), if next.is_some() => {}
            }
            continue;
        };
        let mut w = queue.swap_remove(i);
        let started = std::time::Instant::now();
        let result = upload_segment(&client, &edge, &secret, &w.path).await;
        if !std::mem::replace(&mut w.tried, true) {
            untried.fetch_sub(1, Ordering::SeqCst);
        }
        match result {
            Ok(bytes) => {
                let ms = started.elapsed().as_millis() as u64;
                counters.bytes.inc_by(bytes);
                counters.ms.inc_by(ms);
                tracing::info!(segment = %w.path.display(), bytes, ms, "recording segment uploaded");
            }
            Err(UploadError::Gone(why)) => {
                // The edge will never take it (the recording was deleted, or had ended long
                // before): keep nothing.
                tracing::warn!(segment = %w.path.display(), why, "recording segment refused for good");
            }
            Err(UploadError::Unknown(why)) if w.unknown + 1 > UNKNOWN_TRIES => {
                // Its recording never reached the edge's database (an hour of asking): nobody
                // could ever watch it.
                tracing::error!(segment = %w.path.display(), why, "recording unknown to the edge for an hour: dropped");
            }
            Err(e) => {
                let why = match e {
                    UploadError::Unknown(why) => {
                        w.unknown += 1;
                        why
                    }
                    UploadError::Again(why) | UploadError::Gone(why) => why,
                };
                tracing::warn!(segment = %w.path.display(), why, retry_in_s = w.delay.as_secs(), "recording upload failed");
                w.at = tokio::time::Instant::now() + w.delay;
                w.delay = (w.delay * 2).min(RETRY_MAX);
                queue.push(w);
                continue;
            }
        }
        // Done with it (sent, or never to be): the local copy goes. (Not the recording's
        // directory: the recorder may be making its next segment.)
        if let Some(seg_dir) = w.path.parent() {
            remove_segment(seg_dir);
        }
    }
}

/// A segment waiting to be uploaded.
struct Waiting {
    path: PathBuf,
    /// Not before then.
    at: tokio::time::Instant,
    /// The next wait after a failure.
    delay: Duration,
    /// "No such recording (yet)" answers so far.
    unknown: u32,
    /// Its first upload is done (counted out of [`Uploads::flushed`]'s wait).
    tried: bool,
}

impl Waiting {
    fn new(path: PathBuf, at: tokio::time::Instant) -> Waiting {
        Waiting {
            path,
            at,
            delay: RETRY_FIRST,
            unknown: 0,
            tried: false,
        }
    }
}

/// Answers "no such recording (yet)" a segment gets before it is dropped (about an hour at the
/// longest backoff).
const UNKNOWN_TRIES: u32 = 60;

enum UploadError {
    /// The edge does not know the recording (yet: its row may be on its way).
    Unknown(String),
    /// Worth sending again later (anything else that went wrong: an edge without the route yet,
    /// a recording D1 has not heard of yet).
    Again(String),
    /// Refused for good: 410, the edge's word for a recording deleted or ended long before this
    /// segment; or a segment this SFU cannot read.
    Gone(String),
}

async fn call(
    client: &reqwest::Client,
    edge: &str,
    secret: &str,
    method: reqwest::Method,
    path_and_query: &str,
    body: Vec<u8>,
) -> Result<String, UploadError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sig = control::sign(
        secret.as_bytes(),
        method.as_str(),
        path_and_query,
        &body,
        now,
    )
    .map_err(|e| UploadError::Again(e.to_string()))?;
    let res = client
        .request(method, format!("{edge}{path_and_query}"))
        .header(control::SIGNATURE_HEADER, sig)
        .timeout(Duration::from_secs(60))
        .body(body)
        .send()
        .await
        .map_err(|e| UploadError::Again(e.to_string()))?;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    match status {
        200..=299 => Ok(text),
        410 => Err(UploadError::Gone(format!("{status}: {text}"))),
        404 => Err(UploadError::Unknown(format!("{status}: {text}"))),
        _ => Err(UploadError::Again(format!("{status}: {text}"))),
    }
}

#[derive(Deserialize)]
struct Created {
    upload_id: String,
}

#[derive(Deserialize, serde::Serialize)]
struct Part {
    part: u16,
    etag: String,
}

/// `len` bytes of `file` from `offset` (one part at a time: an hour of camera is never read into
/// memory whole).
async fn read_part(file: &Path, offset: u64, len: usize) -> Result<Vec<u8>, UploadError> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&file)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|e| UploadError::Again(e.to_string()))?
    .map_err(|e| UploadError::Gone(e.to_string()))
}

/// One file: in one `PUT`, or as a multipart upload of `part`-byte parts.
async fn upload_file(
    client: &reqwest::Client,
    edge: &str,
    secret: &str,
    path: &str,
    file: &Path,
    part: usize,
) -> Result<u64, UploadError> {
    let size = std::fs::metadata(file)
        .map_err(|e| UploadError::Gone(format!("{}: {e}", file.display())))?
        .len();
    if size <= part as u64 {
        let bytes = read_part(file, 0, part).await?;
        call(client, edge, secret, reqwest::Method::PUT, path, bytes).await?;
        return Ok(size);
    }
    let created = call(
        client,
        edge,
        secret,
        reqwest::Method::POST,
        &format!("{path}?uploads"),
        Vec::new(),
    )
    .await?;
    let upload: Created =
        serde_json::from_str(&created).map_err(|e| UploadError::Again(e.to_string()))?;
    let id = query_value(&upload.upload_id);
    let mut parts = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let n = parts.len() as u16 + 1;
        let chunk = read_part(file, offset, part).await?;
        if chunk.is_empty() {
            return Err(UploadError::Gone(format!("{} shrank", file.display())));
        }
        offset += chunk.len() as u64;
        let q = format!("{path}?upload={id}&part={n}");
        let answer = call(client, edge, secret, reqwest::Method::PUT, &q, chunk).await?;
        let done: Part =
            serde_json::from_str(&answer).map_err(|e| UploadError::Again(e.to_string()))?;
        parts.push(done);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "parts": parts })).unwrap_or_default();
    call(
        client,
        edge,
        secret,
        reqwest::Method::POST,
        &format!("{path}?upload={id}&complete"),
        body,
    )
    .await?;
    Ok(size)
}

async fn upload_segment(
    client: &reqwest::Client,
    edge: &str,
    secret: &str,
    summary_path: &Path,
) -> Result<u64, UploadError> {
    let json = tokio::fs::read(summary_path)
        .await
        .map_err(|e| UploadError::Gone(format!("{}: {e}", summary_path.display())))?;
    let seg: SegmentSummary =
        serde_json::from_slice(&json).map_err(|e| UploadError::Gone(e.to_string()))?;
    let dir = summary_path.parent().unwrap_or(Path::new("."));
    let base = format!("{RECORDINGS_PATH}/{}/{}", seg.recording, seg.segment);
    let mut total = 0;
    for t in &seg.tracks {
        total += upload_file(
            client,
            edge,
            secret,
            &format!("{base}/{}", t.file),
            &dir.join(&t.file),
            part_size(),
        )
        .await?;
    }
    call(client, edge, secret, reqwest::Method::POST, &base, json).await?;
    Ok(total)
}
