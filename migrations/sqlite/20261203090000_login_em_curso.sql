-- Attempts in flight apart from attempts that failed (SQLite twin of migrations/postgres;
-- see the comments there).
ALTER TABLE login_tentativas ADD COLUMN em_curso INTEGER NOT NULL DEFAULT 0;
ALTER TABLE login_tentativas ADD COLUMN em_curso_ate_ms INTEGER NOT NULL DEFAULT 0;
