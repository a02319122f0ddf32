-- Sessions kept by the service (docs/sessions.md). A session is a random token given once to
-- its holder; only its SHA-256 (hex) is kept here. It belongs to a user and ends with it (ON
-- DELETE CASCADE). `chamador` and `usuario_final` bind it to the end user an authenticated
-- caller opened it for (e.g. the bot and 'telegram:42'): that caller finds it again by the
-- end user alone, and opening another for the same pair replaces it. Both are NULL for a
-- session held by token only (NULLs never collide in the unique key). Times are Unix
-- milliseconds given by the service, so both backends use the same SQL.
CREATE TABLE IF NOT EXISTS sessoes (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    TEXT   NOT NULL,
    usuario_id    BIGINT NOT NULL REFERENCES usuarios (id) ON DELETE CASCADE,
    chamador      TEXT,
    usuario_final TEXT,
    criada_ms     BIGINT NOT NULL,
    -- The absolute end, whatever the use.
    expira_ms     BIGINT NOT NULL,
    -- The last recorded use; the session ends when unused for the idle timeout.
    usada_ms      BIGINT NOT NULL,
    CONSTRAINT sessoes_token_hash_key UNIQUE (token_hash),
    CONSTRAINT sessoes_usuario_final_key UNIQUE (chamador, usuario_final)
);
-- A user's sessions, oldest first: the bound per user evicts from the front.
CREATE INDEX IF NOT EXISTS sessoes_usuario ON sessoes (usuario_id, id);
-- The purge of expired and idle sessions.
CREATE INDEX IF NOT EXISTS sessoes_expira ON sessoes (expira_ms);
CREATE INDEX IF NOT EXISTS sessoes_usada ON sessoes (usada_ms);

-- The audit trail: every change to users and every refused admin attempt. Never a password,
-- hash or token. `ator` is 'usuario:<name>', 'token-admin' or 'anonimo'; `alvo` the user
-- acted on. Old entries are deleted past PRODUTO_AUDIT_RETENTION.
CREATE TABLE IF NOT EXISTS auditoria (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    em_ms         BIGINT NOT NULL,
    acao          TEXT   NOT NULL,
    resultado     TEXT   NOT NULL,
    ator          TEXT   NOT NULL,
    chamador      TEXT,
    usuario_final TEXT,
    alvo          TEXT,
    detalhe       TEXT
);
-- Pages are read newest first by id, filtered by target or actor.
CREATE INDEX IF NOT EXISTS auditoria_alvo ON auditoria (alvo, id);
CREATE INDEX IF NOT EXISTS auditoria_ator ON auditoria (ator, id);
CREATE INDEX IF NOT EXISTS auditoria_em ON auditoria (em_ms);
