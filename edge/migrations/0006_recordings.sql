-- Recordings (issue 16): the room's Durable Object writes a row when a host starts one and its end
-- when it stops; each SFU's part of it (a segment: one WebM file per track, in R2 under
-- recordings/{id}/{segment}/) is added when that SFU has uploaded it. Times: ms since the Unix epoch.

CREATE TABLE recordings (
    id              TEXT PRIMARY KEY,            -- 128 random bits, hex: names the files in R2
    room            TEXT NOT NULL,
    meeting_id      TEXT,                        -- the scheduled meeting (its owner may watch)
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,                     -- NULL: still recording
    started_by      TEXT NOT NULL,               -- the name of who started it
    browser_key     TEXT,                        -- SHA-256 of the starting browser's identity: it may watch
    names           TEXT,                        -- JSON: participant id (as the files name them) -> name
    duration_ms     INTEGER NOT NULL DEFAULT 0,  -- from the manifest, as segments come in
    bytes           INTEGER NOT NULL DEFAULT 0,
    segments        INTEGER NOT NULL DEFAULT 0,
    deleted_at      INTEGER                      -- deleted by its owner: files gone, later uploads refused (410)
);
CREATE INDEX recordings_by_browser ON recordings (browser_key, started_at);
CREATE INDEX recordings_by_meeting ON recordings (meeting_id, started_at);

CREATE TABLE recording_segments (
    recording_id    TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    segment         TEXT NOT NULL,
    started_us      INTEGER NOT NULL,
    summary         TEXT NOT NULL,               -- segment.json (edgemeet_shared::recording::SegmentSummary)
    PRIMARY KEY (recording_id, segment)
);
