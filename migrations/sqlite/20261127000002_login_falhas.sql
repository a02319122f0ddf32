-- Failed logins per username, for brute-force throttling (SQLite twin of migrations/postgres).
-- Kept for unknown usernames too, so that throttling cannot tell them from real ones.
CREATE TABLE IF NOT EXISTS login_falhas (
    usuario          TEXT    PRIMARY KEY,
    falhas           INTEGER NOT NULL,
    janela_inicio_ms INTEGER NOT NULL
);
