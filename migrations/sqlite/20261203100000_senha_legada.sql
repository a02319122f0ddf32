-- Users imported with a legacy password hash (bcrypt, PBKDF2, unsalted SHA-256: see
-- `produto-server import-users`) keep it until their first login replaces it with argon2id.
-- This partial index holds only those rows, so that counting them for the metric
-- `produto_users_legacy_hash` reads nothing once they have all logged in. The `WHERE` must
-- stay word for word the one of the count in src/db/users.rs, or the planner ignores it.
CREATE INDEX IF NOT EXISTS usuarios_senha_legada ON usuarios (id)
    WHERE senha_hash NOT LIKE '$argon2%';
