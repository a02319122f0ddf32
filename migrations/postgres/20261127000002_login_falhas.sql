-- Failed logins per username, shared by every produto instance, for brute-force throttling.
-- Kept for unknown usernames too, so that throttling cannot tell them from real ones.
-- Times are Unix milliseconds given by the service, so both backends use the same SQL.
CREATE TABLE IF NOT EXISTS login_falhas (
    usuario          TEXT    PRIMARY KEY,
    falhas           INTEGER NOT NULL,
    janela_inicio_ms BIGINT  NOT NULL
);
