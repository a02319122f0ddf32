-- Login attempts per (username, caller identity) and per username, for brute-force
-- throttling (SQLite twin of migrations/postgres; see the comments there). Replaces
-- login_falhas.
DROP TABLE IF EXISTS login_falhas;

CREATE TABLE IF NOT EXISTS login_tentativas (
    usuario          TEXT    NOT NULL,
    identidade       TEXT    NOT NULL,
    tentativas       INTEGER NOT NULL,
    janela_inicio_ms INTEGER NOT NULL,
    PRIMARY KEY (usuario, identidade)
);

CREATE INDEX IF NOT EXISTS login_tentativas_janela ON login_tentativas (janela_inicio_ms);
