-- The hash of the key a device was given at its last sign-in: a login that sends the key proves
-- it comes from this device, and is throttled apart from failed guesses made elsewhere. The key
-- before it keeps counting, so a phone whose answer with the new key was lost is not cut off.
ALTER TABLE device ADD COLUMN key_hash TEXT;
ALTER TABLE device ADD COLUMN prev_key_hash TEXT;
