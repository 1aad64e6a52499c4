-- Watch-list hits the officer was told of, by the server's alert number and the person: a
-- pull carries the recent ones each time, and each is news once.
CREATE TABLE watch_hit_told (
    id INTEGER NOT NULL,
    entity TEXT NOT NULL,
    PRIMARY KEY (id, entity)
) WITHOUT ROWID;

-- Set when the server took the pull's cursor for none of its own (its database put back from a
-- backup, or its keys replaced): once a pull from the start is complete, every value of this
-- phone's own that stands is queued to go again, since the server may have lost what it had
-- accepted of them. Kept here so that a sync cut short still does it at the next.
ALTER TABLE device ADD COLUMN resend_due INTEGER NOT NULL DEFAULT 0;

-- Records a phone starting over kept for the changes waiting on them (`Store::start_over`): the
-- pull from the start that follows takes off each it brings; those left when it is complete
-- are no longer in the officer's villages on the server (their drop compacted away), and go.
CREATE TABLE unconfirmed (
    entity TEXT PRIMARY KEY
) WITHOUT ROWID;
