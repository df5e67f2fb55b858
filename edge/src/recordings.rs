//! Recordings: rows in D1 (`recordings`, `recording_segments`), files in R2
//! (`recordings/{id}/{segment}/{file}`, and `recordings/{id}/manifest.json`). What a manifest says
//! and who may watch are `edgemeet_shared::recording`'s; this only moves rows and bytes.
//!
//! From the room (its Durable Object): [`started`] and [`stopped`].
//!
//! From the SFUs (signed with the control key over method, path with query, and body):
//! - `PUT /api/sfu/recordings/{id}/{segment}/{file}`: a file in one request (up to 8 MiB);
//! - `POST …/{file}?uploads` → `{upload_id}`, `PUT …/{file}?upload=U&part=N` → `{part, etag}`,
//!   `POST …/{file}?upload=U&complete` with `{parts}`: a larger file as an R2 multipart upload;
//! - `POST /api/sfu/recordings/{id}/{segment}`: its `segment.json`, last (the manifest follows).
//!   A recording that does not exist (deleted, or never started) is 404: the SFU drops it.
//!
//! For people (the browser that started a recording and the owner of its scheduled meeting manage
//! it; the people the meeting names, signed in with that address, watch it; anyone else gets 403,
//! on every request — see `edgemeet_shared::recording::access`):
//! - `GET /api/recordings` → `{recordings}`: the ones I may watch, newest first, each with
//!   `can_delete`;
//! - `GET /api/recordings/{id}` → the manifest; `…/{id}/manifest.json` the same as a download;
//! - `GET /api/recordings/{id}/{segment}/{file}`: a track's WebM, with `Range` (206) for seeking;
//! - `DELETE /api/recordings/{id}`: gone from R2 and D1 (those who manage it only).

use std::collections::BTreeMap;

use edgemeet_shared::control;
use edgemeet_shared::recording::{
    access, browser_key, check_segment, manifest, parse_range, valid_name, Access, Manifest,
    SegmentSummary,
};
use edgemeet_shared::room::RecordingRow;
use edgemeet_shared::Millis;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{Bucket, Env, Method, Request, Response, UploadedPart};

use crate::accounts::{self, n, s, stmt, Ctx};
use crate::error::{EdgeError, EdgeResult};

pub const BUCKET: &str = "RECORDINGS";
/// The most recordings listed.
const LIST_LIMIT: u32 = 200;
/// The largest file or part the SFU sends in one request.
const MAX_PART: usize = 8 << 20;
/// The most bytes of a `segment.json`.
const MAX_SUMMARY: usize = 1 << 20;

fn file_key(id: &str, segment: &str, file: &str) -> String {
    format!("recordings/{id}/{segment}/{file}")
}

fn manifest_key(id: &str) -> String {
    format!("recordings/{id}/manifest.json")
}

fn opt(v: Option<&str>) -> JsValue {
    v.map_or(JsValue::NULL, JsValue::from_str)
}

// ---- from the room ----

/// A recording started: who may watch it is written down.
pub async fn started(env: &Env, row: &RecordingRow) -> worker::Result<()> {
    let db = env.d1(accounts::BINDING)?;
    let key = row.by_bid.as_deref().map(browser_key);
    db.prepare(
        "INSERT OR IGNORE INTO recordings (id, room, meeting_id, started_at, started_by, browser_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&[
        s(&row.id),
        s(&row.room),
        opt(row.meeting.as_deref()),
        n(row.started_at),
        s(&row.by),
        opt(key.as_deref()),
    ])?
    .run()
    .await?;
    Ok(())
}

/// The recording ended; `names` says who is who in its files.
pub async fn stopped(
    env: &Env,
    id: &str,
    ended_at: Millis,
    names: &BTreeMap<String, String>,
) -> worker::Result<()> {
    let db = env.d1(accounts::BINDING)?;
    db.prepare(
        "UPDATE recordings SET ended_at = ?2, names = ?3 WHERE id = ?1 AND ended_at IS NULL",
    )
    .bind(&[
        s(id),
        n(ended_at),
        s(&serde_json::to_string(names).unwrap_or_else(|_| "{}".into())),
    ])?
    .run()
    .await?;
    // The manifest in R2 names people from now on (if a segment is in already).
    if let Some(rec) = recording_row(&db, id).await.ok().flatten() {
        if let Ok(m) = build_manifest(&db, &rec).await {
            if !m.segments.is_empty() {
                let _ = save_manifest(&db, &env.bucket(BUCKET)?, &m).await;
            }
        }
    }
    Ok(())
}

/// The manifest into R2, and its totals onto the row (the list reads only rows).
async fn save_manifest(db: &worker::D1Database, bucket: &Bucket, m: &Manifest) -> EdgeResult<()> {
    bucket
        .put(
            manifest_key(&m.recording),
            serde_json::to_vec(m).unwrap_or_default(),
        )
        .execute()
        .await?;
    db.prepare("UPDATE recordings SET duration_ms = ?2, bytes = ?3, segments = ?4 WHERE id = ?1")
        .bind(&[
            s(&m.recording),
            n(m.duration_ms),
            n(m.bytes),
            n(m.segments.len() as Millis),
        ])?
        .run()
        .await?;
    Ok(())
}

// ---- from the SFUs ----

#[derive(Deserialize)]
struct RecRow {
    id: String,
    room: String,
    meeting_id: Option<String>,
    started_at: f64,
    ended_at: Option<f64>,
    started_by: String,
    browser_key: Option<String>,
    #[serde(default)]
    names: Option<String>,
    #[serde(default)]
    duration_ms: f64,
    #[serde(default)]
    bytes: f64,
    #[serde(default)]
    segments: f64,
    #[serde(default)]
    deleted_at: Option<f64>,
    /// Only in the listing: its meeting's owner, and whether the one asking is invited to it.
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    invited: Option<f64>,
}

/// A segment that starts this long after its recording ended is not part of it (an SFU's stale
/// state): refused for good.
const LATE_SEGMENT_MS: Millis = 60_000;

const REC_COLUMNS: &str = "id, room, meeting_id, started_at, ended_at, started_by, browser_key, \
     names, duration_ms, bytes, segments, deleted_at";

/// "Refused for good" to an SFU: it drops what it holds of this recording.
fn gone(why: &str) -> EdgeError {
    EdgeError::Refused {
        code: edgemeet_shared::protocol::ErrorCode::Gone,
        message: why.into(),
        retry_after_secs: None,
    }
}

async fn recording_row(db: &worker::D1Database, id: &str) -> EdgeResult<Option<RecRow>> {
    Ok(db
        .prepare(format!(
            "SELECT {REC_COLUMNS} FROM recordings WHERE id = ?1"
        ))
        .bind(&[s(id)])?
        .first::<RecRow>(None)
        .await?)
}

#[derive(Deserialize)]
struct SummaryRow {
    summary: String,
}

const SEGMENTS_SQL: &str =
    "SELECT summary FROM recording_segments WHERE recording_id = ?1 ORDER BY started_us";

fn manifest_of(r: &RecRow, rows: Vec<SummaryRow>) -> Manifest {
    let segments = rows
        .iter()
        .filter_map(|row| serde_json::from_str::<SegmentSummary>(&row.summary).ok())
        .collect();
    let mut m = manifest(
        &r.id,
        &r.room,
        r.started_at as Millis,
        r.ended_at.map(|e| e as Millis),
        &r.started_by,
        segments,
    );
    m.names = r
        .names
        .as_deref()
        .and_then(|n| serde_json::from_str(n).ok())
        .unwrap_or_default();
    m
}

async fn build_manifest(db: &worker::D1Database, r: &RecRow) -> EdgeResult<Manifest> {
    let rows = db
        .prepare(SEGMENTS_SQL)
        .bind(&[s(&r.id)])?
        .all()
        .await?
        .results()?;
    Ok(manifest_of(r, rows))
}

#[derive(Deserialize)]
struct PartsBody {
    parts: Vec<PartBody>,
}

#[derive(Deserialize, Serialize)]
struct PartBody {
    part: u16,
    etag: String,
}

pub async fn sfu_route(mut req: Request, env: &Env, rest: &[&str]) -> EdgeResult<Response> {
    let url = req.url()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|l| l.parse::<usize>().ok());
    if declared.is_some_and(|l| l > MAX_PART) {
        return Err(EdgeError::BadRequest(format!(
            "a part is at most {MAX_PART} bytes"
        )));
    }
    let body = req.bytes().await?;
    if body.len() > MAX_PART {
        return Err(EdgeError::BadRequest(format!(
            "a part is at most {MAX_PART} bytes"
        )));
    }
    let method = req.method();
    control::verify(
        crate::secret(env, "CONTROL_SECRET")?.as_bytes(),
        req.headers().get(control::SIGNATURE_HEADER)?.as_deref(),
        method.as_ref(),
        &path_and_query,
        &body,
        worker::Date::now().as_millis(),
    )?;
    let (id, segment) = match rest {
        [id, segment, ..] => (*id, *segment),
        _ => return Err(EdgeError::NotFound("no such recording route".into())),
    };
    if !edgemeet_shared::protocol::valid_recording_id(id) || !valid_name(segment) {
        return Err(EdgeError::BadRequest(
            "bad recording or segment name".into(),
        ));
    }
    let db = env.d1(accounts::BINDING)?;
    // Not known yet (its row is on its way): the SFU tries again later.
    let Some(rec) = recording_row(&db, id).await? else {
        return Err(EdgeError::NotFound(format!("no recording {id} (yet)")));
    };
    if rec.deleted_at.is_some() {
        return Err(gone("this recording was deleted"));
    }
    let bucket = env.bucket(BUCKET)?;
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let q = |k: &str| query.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    match (method, rest) {
        (Method::Put, [_, _, file]) if query.is_empty() => {
            let key = named_file(id, segment, file)?;
            bucket.put(key, body).execute().await?;
            Ok(Response::empty()?.with_status(204))
        }
        (Method::Post, [_, _, file]) if q("uploads").is_some() => {
            let key = named_file(id, segment, file)?;
            let upload = bucket.create_multipart_upload(key).execute().await?;
            Ok(Response::from_json(
                &serde_json::json!({ "upload_id": upload.upload_id().await }),
            )?)
        }
        (Method::Put, [_, _, file]) => {
            let key = named_file(id, segment, file)?;
            let (Some(upload), Some(part)) = (q("upload"), q("part")) else {
                return Err(EdgeError::BadRequest("upload and part are needed".into()));
            };
            let part: u16 = part
                .parse()
                .ok()
                .filter(|p| (1..=10_000).contains(p))
                .ok_or_else(|| EdgeError::BadRequest("part is 1 to 10000".into()))?;
            let up = bucket.resume_multipart_upload(key, upload)?;
            let done = up.upload_part(part, body).await?;
            Ok(Response::from_json(&PartBody {
                part: done.part_number(),
                etag: done.etag(),
            })?)
        }
        (Method::Post, [_, _, file]) if q("complete").is_some() => {
            let key = named_file(id, segment, file)?;
            let Some(upload) = q("upload") else {
                return Err(EdgeError::BadRequest("upload is needed".into()));
            };
            let parts: PartsBody = serde_json::from_slice(&body)
                .map_err(|e| EdgeError::BadRequest(format!("parts: {e}")))?;
            let up = bucket.resume_multipart_upload(key, upload)?;
            up.complete(
                parts
                    .parts
                    .into_iter()
                    .map(|p| UploadedPart::new(p.part, p.etag)),
            )
            .await?;
            Ok(Response::empty()?.with_status(204))
        }
        (Method::Post, [_, _]) => {
            if body.len() > MAX_SUMMARY {
                return Err(EdgeError::BadRequest("segment.json is too large".into()));
            }
            let seg: SegmentSummary = serde_json::from_slice(&body)
                .map_err(|e| EdgeError::BadRequest(format!("segment.json: {e}")))?;
            check_segment(id, &seg).map_err(|e| gone(&e.to_string()))?;
            if rec
                .ended_at
                .is_some_and(|e| seg.started_us / 1_000 > e as Millis + LATE_SEGMENT_MS)
            {
                return Err(gone("this segment began long after the recording ended"));
            }
            if seg.segment != segment {
                return Err(EdgeError::BadRequest(
                    "segment.json names another segment".into(),
                ));
            }
            db.prepare(
                "INSERT OR REPLACE INTO recording_segments (recording_id, segment, started_us, summary) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(&[
                s(id),
                s(segment),
                JsValue::from_f64(seg.started_us as f64),
                s(&String::from_utf8_lossy(&body)),
            ])?
            .run()
            .await?;
            let m = build_manifest(&db, &rec).await?;
            save_manifest(&db, &bucket, &m).await?;
            Ok(Response::empty()?.with_status(204))
        }
        _ => Err(EdgeError::NotFound("no such recording route".into())),
    }
}

fn named_file(id: &str, segment: &str, file: &str) -> EdgeResult<String> {
    if !valid_name(file) {
        return Err(EdgeError::BadRequest("bad file name".into()));
    }
    Ok(file_key(id, segment, file))
}

// ---- for people ----

/// Who is asking: their browser's key and, signed in, their account and its address.
struct Viewer {
    browser: Option<String>,
    user: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct OwnerRow {
    owner_id: String,
}

/// The recording, if `who` may watch it, and what they may do: 404 unknown, 403 someone else's.
async fn watchable(ctx: &Ctx, who: &Viewer, id: &str) -> EdgeResult<(RecRow, Access)> {
    if !edgemeet_shared::protocol::valid_recording_id(id) {
        return Err(EdgeError::NotFound("There is no such recording.".into()));
    }
    let rec: Option<RecRow> = stmt(
        ctx,
        &format!("SELECT {REC_COLUMNS} FROM recordings WHERE id = ?1 AND deleted_at IS NULL"),
        &[s(id)],
    )?
    .first(None)
    .await?;
    let Some(rec) = rec else {
        return Err(EdgeError::NotFound("There is no such recording.".into()));
    };
    let owner: Option<OwnerRow> = match &rec.meeting_id {
        Some(m) => {
            stmt(ctx, "SELECT owner_id FROM meetings WHERE id = ?1", &[s(m)])?
                .first(None)
                .await?
        }
        None => None,
    };
    let invited = match (&rec.meeting_id, &who.email) {
        (Some(m), Some(email)) => stmt(
            ctx,
            "SELECT 1 AS one FROM meeting_cohosts WHERE meeting_id = ?1 AND email = ?2",
            &[s(m), s(email)],
        )?
        .first::<serde_json::Value>(None)
        .await?
        .is_some(),
        _ => false,
    };
    match access(
        rec.browser_key.as_deref(),
        owner.as_ref().map(|o| o.owner_id.as_str()),
        invited,
        who.browser.as_deref(),
        who.user.as_deref(),
    ) {
        Some(a) => Ok((rec, a)),
        None => Err(EdgeError::Refused {
            code: edgemeet_shared::protocol::ErrorCode::Forbidden,
            message: "Only whoever started this recording, the meeting's owner and the people it \
                      invited may watch it."
                .into(),
            retry_after_secs: None,
        }),
    }
}

#[derive(Serialize)]
struct Listing {
    id: String,
    room: String,
    started_at: Millis,
    ended_at: Option<Millis>,
    by: String,
    duration_ms: u64,
    bytes: u64,
    segments: usize,
    /// They manage it (else they were invited to watch).
    can_delete: bool,
}

pub async fn route(req: Request, env: &Env, rest: &[&str]) -> EdgeResult<Response> {
    let ctx = accounts::context(&req, env)?;
    if req.method() != Method::Get {
        accounts::same_origin_only(&req)?;
    }
    let res = async {
        let user = accounts::signed_in(&ctx).await.ok();
        let who = Viewer {
            browser: crate::known_identity(&req)?.as_deref().map(browser_key),
            user: user.as_ref().map(|u| u.id.clone()),
            email: user.map(|u| u.email),
        };
        match (req.method(), rest) {
            (Method::Get, []) => list(&ctx, &who).await,
            (Method::Get, [id]) => {
                let (rec, _) = watchable(&ctx, &who, id).await?;
                Ok(Response::from_json(&build_manifest_ctx(&ctx, &rec).await?)?)
            }
            (Method::Get, [id, "manifest.json"]) => {
                let (rec, _) = watchable(&ctx, &who, id).await?;
                let res = Response::from_json(&build_manifest_ctx(&ctx, &rec).await?)?;
                res.headers().set(
                    "content-disposition",
                    &format!("attachment; filename=\"recording-{}.json\"", rec.id),
                )?;
                Ok(res)
            }
            (Method::Get, [id, segment, file]) => {
                let (rec, _) = watchable(&ctx, &who, id).await?;
                if !valid_name(segment) || !valid_name(file) {
                    return Err(EdgeError::NotFound("There is no such file.".into()));
                }
                serve_file(
                    &req,
                    &env.bucket(BUCKET)?,
                    &file_key(&rec.id, segment, file),
                )
                .await
            }
            (Method::Delete, [id]) => match watchable(&ctx, &who, id).await? {
                (rec, Access::Manage) => delete(&ctx, &env.bucket(BUCKET)?, &rec.id).await,
                (_, Access::Watch) => Err(EdgeError::Refused {
                    code: edgemeet_shared::protocol::ErrorCode::Forbidden,
                    message: "Only whoever started this recording, or the meeting's owner, may \
                              delete it."
                        .into(),
                    retry_after_secs: None,
                }),
            },
            (m, _) => Err(EdgeError::NotFound(format!(
                "no recordings route {m} /api/recordings/{}",
                rest.join("/")
            ))),
        }
    }
    .await;
    accounts::with_bookmark(res.unwrap_or_else(EdgeError::into_response), &ctx)
}

async fn build_manifest_ctx(ctx: &Ctx, r: &RecRow) -> EdgeResult<Manifest> {
    let rows = stmt(ctx, SEGMENTS_SQL, &[s(&r.id)])?
        .all()
        .await?
        .results()?;
    Ok(manifest_of(r, rows))
}

async fn list(ctx: &Ctx, who: &Viewer) -> EdgeResult<Response> {
    if who.browser.is_none() && who.user.is_none() {
        return Ok(Response::from_json(
            &serde_json::json!({ "recordings": [] }),
        )?);
    }
    let rows: Vec<RecRow> = stmt(
        ctx,
        "SELECT r.id, r.room, r.meeting_id, r.started_at, r.ended_at, r.started_by, r.browser_key, \
         r.names, r.duration_ms, r.bytes, r.segments, r.deleted_at, m.owner_id, \
         (?3 IS NOT NULL AND EXISTS (SELECT 1 FROM meeting_cohosts c \
           WHERE c.meeting_id = r.meeting_id AND c.email = ?3)) AS invited \
         FROM recordings r LEFT JOIN meetings m ON m.id = r.meeting_id \
         WHERE r.deleted_at IS NULL AND ((?1 IS NOT NULL AND r.browser_key = ?1) \
         OR (?2 IS NOT NULL AND m.owner_id = ?2) \
         OR (?2 IS NOT NULL AND ?3 IS NOT NULL AND EXISTS (SELECT 1 FROM meeting_cohosts c \
           WHERE c.meeting_id = r.meeting_id AND c.email = ?3))) \
         ORDER BY r.started_at DESC LIMIT ?4",
        &[
            opt(who.browser.as_deref()),
            opt(who.user.as_deref()),
            opt(who.email.as_deref()),
            n(Millis::from(LIST_LIMIT)),
        ],
    )?
    .all()
    .await?
    .results()?;
    let out: Vec<Listing> = rows
        .into_iter()
        .filter_map(|r| {
            let a = access(
                r.browser_key.as_deref(),
                r.owner_id.as_deref(),
                r.invited.unwrap_or(0.0) != 0.0,
                who.browser.as_deref(),
                who.user.as_deref(),
            )?;
            Some(Listing {
                id: r.id,
                room: r.room,
                started_at: r.started_at as Millis,
                ended_at: r.ended_at.map(|e| e as Millis),
                by: r.started_by,
                duration_ms: r.duration_ms as u64,
                bytes: r.bytes as u64,
                segments: r.segments as usize,
                can_delete: a == Access::Manage,
            })
        })
        .collect();
    Ok(Response::from_json(
        &serde_json::json!({ "recordings": out }),
    )?)
}

/// A file from R2, whole or the range asked for (206), so the player seeks at once.
async fn serve_file(req: &Request, bucket: &Bucket, key: &str) -> EdgeResult<Response> {
    let Some(head) = bucket.head(key).await? else {
        return Err(EdgeError::NotFound("There is no such file.".into()));
    };
    let size = head.size();
    let range = match parse_range(req.headers().get("range")?.as_deref(), size) {
        Ok(r) => r,
        Err(_) => {
            let res = Response::empty()?.with_status(416);
            res.headers()
                .set("content-range", &format!("bytes */{size}"))?;
            return Ok(res);
        }
    };
    let get = bucket.get(key);
    let get = match range {
        Some((start, end)) => get.range(worker::Range::OffsetWithLength {
            offset: start,
            length: end - start + 1,
        }),
        None => get,
    };
    let Some(obj) = get.execute().await? else {
        return Err(EdgeError::NotFound("There is no such file.".into()));
    };
    let Some(body) = obj.body() else {
        return Err(EdgeError::NotFound("There is no such file.".into()));
    };
    let res = Response::from_body(body.response_body()?)?;
    let res = match range {
        Some((start, end)) => {
            let res = res.with_status(206);
            res.headers()
                .set("content-range", &format!("bytes {start}-{end}/{size}"))?;
            res.headers()
                .set("content-length", &(end - start + 1).to_string())?;
            res
        }
        None => {
            res.headers().set("content-length", &size.to_string())?;
            res
        }
    };
    let kind = if key.ends_with("audio.webm") {
        "audio/webm"
    } else {
        "video/webm"
    };
    res.headers().set("content-type", kind)?;
    res.headers().set("accept-ranges", "bytes")?;
    res.headers().set("cache-control", "private, no-store")?;
    Ok(res)
}

/// Every file of the recording out of R2, then its rows.
async fn delete(ctx: &Ctx, bucket: &Bucket, id: &str) -> EdgeResult<Response> {
    let prefix = format!("recordings/{id}/");
    let mut cursor: Option<String> = None;
    loop {
        let mut list = bucket.list().prefix(prefix.clone());
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let objects = list.execute().await?;
        let keys: Vec<String> = objects.objects().iter().map(|o| o.key()).collect();
        if !keys.is_empty() {
            bucket.delete_multiple(keys).await?;
        }
        match objects.cursor().filter(|_| objects.truncated()) {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // The row stays as a tombstone (no names, no totals): an SFU still holding a segment of it is
    // told it is gone for good.
    stmt(
        ctx,
        "DELETE FROM recording_segments WHERE recording_id = ?1",
        &[s(id)],
    )?
    .run()
    .await?;
    stmt(
        ctx,
        "UPDATE recordings SET deleted_at = ?2, names = NULL, started_by = '', duration_ms = 0, \
         bytes = 0, segments = 0 WHERE id = ?1",
        &[s(id), n(ctx.now)],
    )?
    .run()
    .await?;
    Ok(Response::empty()?.with_status(204))
}
