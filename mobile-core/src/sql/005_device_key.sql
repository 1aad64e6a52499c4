-- The key the server gave this device at its last sign-in: sent at the next one, it proves the
-- sign-in comes from a device the officer already registered, so guesses at the password made
-- elsewhere cannot lock the officer out here. Kept when the officer signs out.
ALTER TABLE session ADD COLUMN device_key TEXT;
