-- Sessions and the audit trail (SQLite twin of migrations/postgres; see the comments there).
-- Foreign keys are on in every connection (sqlx's default), so a user's sessions go with it.
CREATE TABLE IF NOT EXISTS sessoes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash    TEXT    NOT NULL UNIQUE,
    usuario_id    INTEGER NOT NULL REFERENCES usuarios (id) ON DELETE CASCADE,
    chamador      TEXT,
    usuario_final TEXT,
    criada_ms     INTEGER NOT NULL,
    expira_ms     INTEGER NOT NULL,
    usada_ms      INTEGER NOT NULL,
    UNIQUE (chamador, usuario_final)
);
CREATE INDEX IF NOT EXISTS sessoes_usuario ON sessoes (usuario_id, id);
CREATE INDEX IF NOT EXISTS sessoes_expira ON sessoes (expira_ms);
CREATE INDEX IF NOT EXISTS sessoes_usada ON sessoes (usada_ms);

CREATE TABLE IF NOT EXISTS auditoria (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    em_ms         INTEGER NOT NULL,
    acao          TEXT    NOT NULL,
    resultado     TEXT    NOT NULL,
    ator          TEXT    NOT NULL,
    chamador      TEXT,
    usuario_final TEXT,
    alvo          TEXT,
    detalhe       TEXT
);
CREATE INDEX IF NOT EXISTS auditoria_alvo ON auditoria (alvo, id);
CREATE INDEX IF NOT EXISTS auditoria_ator ON auditoria (ator, id);
CREATE INDEX IF NOT EXISTS auditoria_em ON auditoria (em_ms);
