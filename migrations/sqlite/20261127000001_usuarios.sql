-- The users of the chat bot (SQLite twin of migrations/postgres). A username is unique and
-- compared exactly (case-sensitive); the password is kept only as an argon2id PHC string.
CREATE TABLE IF NOT EXISTS usuarios (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    usuario    TEXT    NOT NULL UNIQUE,
    senha_hash TEXT    NOT NULL,
    nivel      INTEGER NOT NULL CHECK (nivel >= 0),
    criado_em  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
