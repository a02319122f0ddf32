-- The users of the chat bot. A username is unique and compared exactly (case-sensitive);
-- the password is kept only as an argon2id PHC string.
CREATE TABLE IF NOT EXISTS usuarios (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    usuario    TEXT        NOT NULL,
    senha_hash TEXT        NOT NULL,
    nivel      INTEGER     NOT NULL CHECK (nivel >= 0),
    criado_em  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The unique index is also the lookup path of every RPC.
    CONSTRAINT usuarios_usuario_key UNIQUE (usuario)
);
