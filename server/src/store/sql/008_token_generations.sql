-- Access tokens name the generation of their device and of their account they were issued in.
-- Signing a device out moves its generation on, disabling an account moves the account's: every
-- token issued before stops working at once, and enabling the account again revives none.
ALTER TABLE device ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE account ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0;
