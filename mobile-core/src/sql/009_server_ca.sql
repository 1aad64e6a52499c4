-- The CA the server's certificate is signed by (PEM), when it is not one of the bundled roots:
-- a police intranet's own. Trusted for the server instead of the bundled roots.
ALTER TABLE device ADD COLUMN server_ca TEXT;
