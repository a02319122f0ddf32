-- Login attempts per (username, caller identity) and per username, for brute-force
-- throttling; replaces login_falhas, which counted failures after the fact and kept a row for
-- every username ever tried.
--
-- An attempt is counted when it starts (an atomic upsert that returns the new count), so
-- guesses sent at the same time cannot all slip under the limit. `identidade` is the
-- caller: 'ip:<address>' or 'end-user:<id>' (an end user named by an authenticated caller);
-- '*' is the row that counts every caller's attempts on the username.
-- Times are Unix milliseconds given by the service, so both backends use the same SQL.
DROP TABLE IF EXISTS login_falhas;

CREATE TABLE IF NOT EXISTS login_tentativas (
    usuario          TEXT    NOT NULL,
    identidade       TEXT    NOT NULL,
    -- Attempts begun in the current window, less the refunded ones (successes, errors).
    tentativas       INTEGER NOT NULL,
    janela_inicio_ms BIGINT  NOT NULL,
    PRIMARY KEY (usuario, identidade)
);

-- Rows whose window has passed are deleted in bounded batches by each instance.
CREATE INDEX IF NOT EXISTS login_tentativas_janela ON login_tentativas (janela_inicio_ms);
