-- Accounts and their sessions (issue 15). Applied by `cargo xtask dev/test` to the local D1
-- (`wrangler d1 migrations apply DB --local`) and by `cargo xtask deploy` to the real one.
-- Times are milliseconds since the Unix epoch. D1 enforces foreign keys.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,            -- 128 random bits, hex
    email           TEXT NOT NULL UNIQUE,        -- normalised: trimmed, lower-case
    name            TEXT NOT NULL,               -- display name, as joined with
    password_hash   TEXT NOT NULL,               -- argon2id PHC string; never leaves D1
    created_at      INTEGER NOT NULL,
    password_at     INTEGER NOT NULL,            -- last password change
    failed_logins   INTEGER NOT NULL DEFAULT 0,  -- wrong passwords in the current window
    failed_since    INTEGER                      -- start of that window (NULL: none)
);

CREATE TABLE sessions (
    key             TEXT PRIMARY KEY,            -- SHA-256 of the cookie's token, hex
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    user_agent      TEXT NOT NULL DEFAULT ''     -- shown in "Download my data"
);
CREATE INDEX sessions_by_user ON sessions(user_id);
