CREATE TABLE deferred_index (
    -- A search index of `record` dropped while a bootstrap fills the table, with the statement
    -- that builds it again when the pull completes (or the store is next opened): building an
    -- index once over every record costs a fraction of keeping it up to date record by record.
    name TEXT PRIMARY KEY,
    sql TEXT NOT NULL
);
