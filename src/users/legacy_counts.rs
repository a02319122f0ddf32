//! Users still on a legacy (imported) hash, by format: counted in the database periodically
//! (`app/supervise.rs`), lowered at once when a login replaces one, shown on `/metrics`.
//! The formats are `password::legacy`'s one list ([`LEGACY`]).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use crate::password::legacy::{Format, LEGACY};

/// Users on a legacy hash by format, told apart by the prefixes of `password::legacy`; its
/// `WHERE` is the partial index's, word for word, so that both planners use the index.
/// Built once from those constants (no input reaches it).
pub(super) fn legacy_count_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut sql = String::from("SELECT CASE");
        for format in LEGACY {
            if let Some(prefix) = format.prefix() {
                // `_` and `%` are LIKE's wildcards: escaped, so that each prefix is literal.
                let literal = prefix
                    .replace('!', "!!")
                    .replace('_', "!_")
                    .replace('%', "!%");
                sql.push_str(&format!(
                    " WHEN senha_hash LIKE '{literal}%' ESCAPE '!' THEN '{}'",
                    format.label()
                ));
            }
        }
        sql.push_str(&format!(
            " ELSE '{}' END AS formato, COUNT(*) AS n \
             FROM usuarios WHERE senha_hash NOT LIKE '$argon2%' GROUP BY 1",
            Format::Sha256.label()
        ));
        sql
    });
    &SQL
}

/// The format of a stored hash as [`legacy_count_sql`] sorts it; `None` for argon2.
pub(super) fn legacy_format_of(stored: &str) -> Option<Format> {
    Format::legacy_index(stored).map(|i| LEGACY[i])
}

/// Users still on a legacy hash, by format (the order of [`LEGACY`]).
#[derive(Debug, Default)]
pub struct LegacyHashCounts {
    counts: [AtomicI64; LEGACY.len()],
    /// False until the first count: `/metrics` shows nothing rather than zeros it never read.
    counted: AtomicBool,
}

impl LegacyHashCounts {
    /// The counts read from the database, `(format label, users)`; formats absent are 0.
    pub(crate) fn set(&self, rows: &[(String, i64)]) {
        for (format, count) in LEGACY.iter().zip(&self.counts) {
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
        let index = LEGACY.iter().position(|f| *f == format);
        if let Some(count) = index.and_then(|i| self.counts.get(i)) {
            // Never below zero: the count may predate an import made since.
            let _ = count.fetch_update(Relaxed, Relaxed, |n| Some((n - 1).max(0)));
        }
    }

    /// `(format label, users)` for each legacy format, once counted.
    pub fn get(&self) -> Option<Vec<(&'static str, i64)>> {
        self.counted.load(Relaxed).then(|| {
            LEGACY
                .iter()
                .zip(&self.counts)
                .map(|(format, n)| (format.label(), n.load(Relaxed)))
                .collect()
        })
    }
}
