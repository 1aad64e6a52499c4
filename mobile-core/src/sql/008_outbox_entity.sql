-- A record's waiting actions, found without reading the whole outbox: a push ends before a
-- record whose later actions would not fit in it, so that a record goes to the server whole.
CREATE INDEX outbox_entity ON outbox (entity, first_counter) WHERE pending > 0;
