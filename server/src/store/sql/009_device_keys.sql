-- The hash of the key a device was given at its last sign-in: a login that sends the key proves
-- it comes from this device, and is throttled apart from failed guesses made elsewhere.
ALTER TABLE device ADD COLUMN key_hash TEXT;
