//! Users still on a legacy (imported) hash, by format: counted in the database periodically
//! (`app/supervise.rs`), lowered at once when a login replaces one, shown on `/metrics`.
//! The formats are `password::legacy`'s one list ([`Format::LEGACY`]).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use crate::password::legacy::Format;

/// Users on a legacy hash by format; its `WHERE` is the partial index's, word for word, so
/// that both planners use the index. The shapes are the import's ([`legacy_format_of`]), the
/// labels [`Format::label`]'s.
pub(super) const LEGACY_COUNT_SQL: &str = "SELECT CASE
         WHEN senha_hash LIKE '$2%' THEN 'bcrypt'
         WHEN senha_hash LIKE 'pbkdf2:%' THEN 'werkzeug_pbkdf2_sha256'
         WHEN senha_hash LIKE 'pbkdf2!_%' ESCAPE '!' THEN 'django_pbkdf2_sha256'
         ELSE 'sha256' END AS formato, COUNT(*) AS n
     FROM usuarios WHERE senha_hash NOT LIKE '$argon2%' GROUP BY 1";

/// The format of a stored hash as [`LEGACY_COUNT_SQL`] sorts it; `None` for argon2.
pub(super) fn legacy_format_of(stored: &str) -> Option<Format> {
    if stored.starts_with("$argon2") {
        None
    } else if stored.starts_with("$2") {
        Some(Format::Bcrypt)
    } else if stored.starts_with("pbkdf2:") {
        Some(Format::WerkzeugPbkdf2)
    } else if stored.starts_with("pbkdf2_") {
        Some(Format::DjangoPbkdf2)
    } else {
        Some(Format::Sha256)
    }
}

/// Users still on a legacy hash, by format (the order of [`Format::LEGACY`]).
#[derive(Debug, Default)]
pub struct LegacyHashCounts {
    counts: [AtomicI64; Format::LEGACY.len()],
    /// False until the first count: `/metrics` shows nothing rather than zeros it never read.
    counted: AtomicBool,
}

impl LegacyHashCounts {
    /// The counts read from the database, `(format label, users)`; formats absent are 0.
    pub(crate) fn set(&self, rows: &[(String, i64)]) {
        for (format, count) in Format::LEGACY.iter().zip(&self.counts) {
            let n = rows
                .iter()
                .find(|(l, _)| l == format.label())
                .map_or(0, |(_, n)| *n);
            count.store(n, Relaxed);
        }
        self.counted.store(true, Relaxed);
    }

    /// One user of `format` moved to argon2id.
    pub(crate) fn forget_one(&self, format: Format) {
        let index = Format::LEGACY.iter().position(|f| *f == format);
        if let Some(count) = index.and_then(|i| self.counts.get(i)) {
            // Never below zero: the count may predate an import made since.
            let _ = count.fetch_update(Relaxed, Relaxed, |n| Some((n - 1).max(0)));
        }
    }

    /// `(format label, users)` for each legacy format, once counted.
    pub fn get(&self) -> Option<Vec<(&'static str, i64)>> {
        self.counted.load(Relaxed).then(|| {
            Format::LEGACY
                .iter()
                .zip(&self.counts)
                .map(|(format, n)| (format.label(), n.load(Relaxed)))
                .collect()
        })
    }
}
