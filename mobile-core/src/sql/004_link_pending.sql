CREATE TABLE link_pending (
    -- Links of records a bootstrap brings, appended as they come while the pull runs and moved
    -- into `link` in key order when it is complete (its `deferred_index` row says how): kept
    -- in key order record by record, the links rewrote most of their table at every commit.
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    field TEXT NOT NULL
);
