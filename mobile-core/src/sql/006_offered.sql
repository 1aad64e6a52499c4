-- The highest change counter this device ever handed out to be sent (to a server or another
-- replica): a capture whose changes are all above it has reached no one, and deleting it
-- withdraws it instead of sending a deletion.
ALTER TABLE device ADD COLUMN offered_counter INTEGER NOT NULL DEFAULT 0;
