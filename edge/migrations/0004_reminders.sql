-- Reminders (issue 15): a cron trigger (every minute, edge/src/reminders.rs) marks the occurrence of
-- a scheduled meeting that starts within ten minutes; the Meetings page shows the marked ones.

-- When the cron looks at the meeting next (ms since the epoch; 0: at its next run; NULL: never
-- again — no occurrence left, or cancelled).
ALTER TABLE meetings ADD COLUMN remind_at INTEGER;
UPDATE meetings SET remind_at = 0 WHERE cancelled = 0;
CREATE INDEX meetings_by_remind_at ON meetings(remind_at) WHERE remind_at IS NOT NULL;

CREATE TABLE reminders (
    meeting_id      TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    starts_at       INTEGER NOT NULL,            -- the occurrence's start
    marked_at       INTEGER NOT NULL,
    PRIMARY KEY (meeting_id, starts_at)
);
