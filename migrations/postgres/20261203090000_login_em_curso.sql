-- Attempts in flight apart from attempts that failed (issue 23), so that a right password is
-- refused only when the limit was reached by wrong ones.
--
-- From this migration on, `tentativas` counts the attempts of the current window whose
-- password was checked and was wrong (or, on the '*' row, every caller's such attempts).
-- `em_curso` counts the attempts claimed and not yet resolved; a claim is allowed while
-- tentativas + em_curso stays within the limit, and one that finds the limit taken by
-- attempts in flight waits for them instead of being refused. `em_curso_ate_ms` is when the
-- newest claim expires: every attempt resolves or is abandoned before then (the service
-- bounds it), so past it `em_curso` counts claims lost to a crash and is reset.
ALTER TABLE login_tentativas ADD COLUMN em_curso INTEGER NOT NULL DEFAULT 0;
ALTER TABLE login_tentativas ADD COLUMN em_curso_ate_ms BIGINT NOT NULL DEFAULT 0;
