-- Meeting reports (issue 15): written by each scheduled meeting's room (its Durable Object) while
-- the meeting runs, in batches (edgemeet_shared::room's report outbox). Times are milliseconds
-- since the Unix epoch. A run is one meeting from the first person in to its end.

CREATE TABLE meeting_runs (
    meeting_id      TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    started_at      INTEGER NOT NULL,            -- when the first person came in
    seq             INTEGER NOT NULL,            -- the room's number for these totals: newer replace older
    ended_at        INTEGER,                     -- the last person left or the host ended it; NULL: going on
    chat_messages   INTEGER NOT NULL,
    polls           TEXT NOT NULL,               -- JSON of [edgemeet_shared::report::PollSummary]
    PRIMARY KEY (meeting_id, started_at)
);

-- One row per arrival and departure (a connection that drops and comes back within the room's
-- reconnect grace is neither). Who someone is: their browser's number in the run, nothing more.
CREATE TABLE attendance (
    meeting_id      TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    started_at      INTEGER NOT NULL,
    seq             INTEGER NOT NULL,            -- the room's number for the row (written once)
    person          INTEGER NOT NULL,
    name            TEXT NOT NULL,
    joined          INTEGER NOT NULL,            -- 1: came in, 0: went out
    at              INTEGER NOT NULL,
    PRIMARY KEY (meeting_id, started_at, seq)
);
