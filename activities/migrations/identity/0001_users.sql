-- Login accounts of every role. Passwords are argon2 hashes; demo users are
-- seeded at start-up (hashing needs code, so not here).
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,          -- customer | owner | rider
    shop_id       TEXT                    -- owners only
);
-- The token-signing key, generated once and shared by every API process.
CREATE TABLE IF NOT EXISTS secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
