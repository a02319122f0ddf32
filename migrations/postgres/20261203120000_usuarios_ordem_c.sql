-- ListarUsuarios pages through users in code point order of usuario (COLLATE "C"), whatever
-- collation the database was created with, so that a page token means the same on every
-- server and on SQLite. The unique key's index follows the database's collation and cannot
-- serve that order: this one does, so that a page reads its rows instead of sorting the table.
CREATE INDEX IF NOT EXISTS usuarios_usuario_c ON usuarios (usuario COLLATE "C");
