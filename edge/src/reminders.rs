//! The reminder cron (`[triggers] crons` in wrangler.toml: every minute): each scheduled meeting
//! due a look (`meetings.remind_at`) gets its occurrence starting within ten minutes marked in
//! `reminders` (what the Meetings page shows), and its next look set. What is due when is
//! `edgemeet_shared::schedule::reminder_step`'s; this only moves rows.

use edgemeet_shared::schedule::{reminder_step, Schedule};
use edgemeet_shared::Millis;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::Env;

use crate::accounts::{n, s, BINDING};

/// The most meetings looked at in one run (the rest are the next minute's).
/// (Two statements each in one batch: within D1's 1,000 queries per invocation on the Paid plan.)
const PER_RUN: u32 = 200;
/// Marks older than this are dropped.
const KEEP_MS: Millis = 24 * 3_600_000;

#[derive(Deserialize)]
struct Due {
    id: String,
    schedule: String,
    sequence: f64,
}

/// One run at `now`: returns how many reminders it marked.
pub async fn run(env: &Env, now: Millis) -> worker::Result<usize> {
    let db = env.d1(BINDING)?;
    let due: Vec<Due> = db
        .prepare(
            "SELECT id, schedule, sequence FROM meetings WHERE remind_at IS NOT NULL AND remind_at <= ?1 \
             AND cancelled = 0 ORDER BY remind_at LIMIT ?2",
        )
        .bind(&[n(now), n(Millis::from(PER_RUN))])?
        .all()
        .await?
        .results()?;
    let mut batch = Vec::with_capacity(2 * due.len() + 1);
    let mut marked = 0;
    for m in &due {
        let (mark, next) = match serde_json::from_str::<Schedule>(&m.schedule) {
            Ok(sched) => reminder_step(&sched, now),
            Err(e) => {
                worker::console_error!("meeting {}: stored schedule: {e}", m.id);
                (None, None)
            }
        };
        if let Some(start) = mark {
            marked += 1;
            batch.push(
                db.prepare(
                    "INSERT OR IGNORE INTO reminders (meeting_id, starts_at, marked_at) VALUES (?1, ?2, ?3)",
                )
                .bind(&[s(&m.id), n(start), n(now)])?,
            );
        }
        batch.push(
            // Unless it changed meanwhile (an edit set `remind_at` to 0: the next run looks).
            db.prepare("UPDATE meetings SET remind_at = ?2 WHERE id = ?1 AND sequence = ?3")
                .bind(&[
                    s(&m.id),
                    next.map_or(JsValue::NULL, n),
                    JsValue::from_f64(m.sequence),
                ])?,
        );
    }
    batch.push(
        db.prepare("DELETE FROM reminders WHERE starts_at < ?1")
            .bind(&[n(now.saturating_sub(KEEP_MS))])?,
    );
    db.batch(batch).await?;
    Ok(marked)
}
