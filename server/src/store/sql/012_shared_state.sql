-- What every server node over one database must share, kept in the database rather than in one
-- process's memory.
--
-- Token keys: access tokens, pull cursors and known-browser cookies are signed with the newest
-- key that is not retired, and checked with every key not retired, so a key is replaced without
-- signing anyone out. A token names its key (`kid`). The first key is the data directory's
-- `secret.key`, imported at start.
CREATE TABLE token_key (
    id TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    retired_ms INTEGER
);

-- Login attempts within the throttle's window, by throttle key (`user:NAME`, `addr:IP`,
-- `device:ID`, `browser:ID`): one row per key of an attempt in flight (`failed` 0) or failed
-- (1). A success deletes its rows; an attempt in flight for longer than a login can take (its
-- node died) counts as failed.
CREATE TABLE login_attempt (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE INDEX login_attempt_key ON login_attempt (key, at_ms);
CREATE INDEX login_attempt_attempt ON login_attempt (attempt);
CREATE INDEX login_attempt_at ON login_attempt (at_ms);
