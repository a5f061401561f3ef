-- The token-signing key lives in its own file now (AUTH_SIGNING_KEY_FILE, 0600),
-- not beside the password hashes: forget the copy kept here. Tokens it signed
-- are no longer accepted; their users log in again.
DELETE FROM secrets WHERE name = 'token-key';
