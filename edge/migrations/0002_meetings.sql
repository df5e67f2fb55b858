-- Scheduled meetings (issue 15). Times are milliseconds since the Unix epoch.

CREATE TABLE meetings (
    id              TEXT PRIMARY KEY,            -- 128 random bits, hex (the .ics UID's left part)
    owner_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room            TEXT NOT NULL UNIQUE,        -- "m-" + 128 random bits: the link
    schedule        TEXT NOT NULL,               -- JSON of edgemeet_shared::schedule::Schedule
    password_hash   TEXT,                        -- argon2id PHC string, or NULL
    sequence        INTEGER NOT NULL DEFAULT 0,  -- the .ics SEQUENCE: bumped on every change
    cancelled       INTEGER NOT NULL DEFAULT 0,
    ends_at         INTEGER NOT NULL,            -- when the last occurrence ends
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX meetings_by_owner ON meetings(owner_id, ends_at);

-- Co-hosts named by email (also how invitees with accounts find the meeting in "Upcoming").
CREATE TABLE meeting_cohosts (
    meeting_id      TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    email           TEXT NOT NULL,               -- normalised
    PRIMARY KEY (meeting_id, email)
);
CREATE INDEX meeting_cohosts_by_email ON meeting_cohosts(email);
