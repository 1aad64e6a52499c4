CREATE TABLE session (
    -- The device's link to its server, at most one row: who signed in, their villages, the
    -- tokens and where the last pull ended.
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server TEXT NOT NULL,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    villages TEXT NOT NULL DEFAULT '[]',
    access_token TEXT,
    refresh_token TEXT,
    cursor TEXT,
    last_sync_ms INTEGER
);

-- The newest clock reading seen from other nodes: after a clock correction the device's clock
-- may go back to it, never below.
ALTER TABLE device ADD COLUMN max_remote_hlc INTEGER NOT NULL DEFAULT 0;

-- Records the station returned to the officer: few, looked up for the status screen.
CREATE INDEX record_returned ON record (review_status) WHERE review_status = 'returned';
