//! Password hashes made by other software (the old bot's table), recognised by their shape
//! and verified as they are, so that imported users keep their passwords; the first login
//! with one re-hashes the password with argon2id (see [`super::Hasher::verify`]).
//!
//! A stored hash is data: its cost (bcrypt's cost, PBKDF2's iterations, sha-crypt's rounds,
//! scrypt's and argon2's memory and passes) is checked against a cap before any work, at
//! import and again at every login. [`LEGACY`] is the one list of the formats.

use argon2::PasswordVerifier as _;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use sha_crypt::PasswordVerifier as _;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Highest bcrypt cost accepted (2^13 rounds; Python's bcrypt, passlib and Django default to
/// 12, PHP 8.4 too). One guess at cost 13 holds a hashing thread ~24 times as long as
/// produto's argon2id (docs/moving-from-the-old-bot.md has the figures); past it, seconds.
pub const MAX_BCRYPT_COST: u32 = 13;
/// Lowest cost bcrypt itself accepts.
const MIN_BCRYPT_COST: u32 = 4;
/// Highest PBKDF2 iteration count accepted, whatever the digest. Django raises its count
/// with each release (5.2: 1 000 000, 6.1: 1 500 000), Werkzeug 3.1 stores 1 000 000, passlib
/// 29 000 (SHA-256), 25 000 (SHA-512), 131 000 (SHA-1).
pub const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;
/// Highest sha-crypt (`$5$`, `$6$`) rounds accepted (passlib stores 535 000 and 656 000;
/// without `rounds=` the count is 5000). The lowest is crypt's own, 1000.
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
/// Lowest sha-crypt rounds (crypt(3) raises less to 1000; produto refuses it instead).
const MIN_SHA_CRYPT_ROUNDS: u32 = 1_000;
/// Most memory one verification of a memory-hard hash (scrypt, Django's argon2) may take, in
/// KiB: Django's argon2 default (100 MiB), the largest of the libraries' defaults (scrypt:
/// Werkzeug 32 MiB, Django 16 MiB, passlib 64 MiB). Such verifications run one at a time
/// (see [`super::Hasher`]), so that a burst of them cannot add up past the server's memory.
pub const MAX_MEMORY_KIB: u64 = 100 * 1024;
/// Most memory × passes one such verification may cost, in KiB: four passes over the most
/// memory (Django's scrypt, 16 MiB × 5 lanes, and its argon2, 100 MiB × 2 passes, fit).
pub const MAX_WORK_KIB: u64 = 4 * MAX_MEMORY_KIB;
/// Bytes of a SHA-256 output, which the unsalted hex format stores.
const SHA256_BYTES: usize = 32;

/// The shapes of stored password recognised, for the import's report and the metric of
/// users still on a legacy hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// An argon2 PHC string (`$argon2id$...`, `$argon2i$`, `$argon2d$`): produto's own,
    /// argon2-cffi's, passlib's.
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`: Python's bcrypt, passlib, PHP.
    Bcrypt,
    /// Werkzeug's (Flask's) `pbkdf2:sha256:<iterations>$<salt>$<hex>`.
    WerkzeugPbkdf2,
    /// Werkzeug's `pbkdf2:sha1:<iterations>$<salt>$<hex>`.
    WerkzeugPbkdf2Sha1,
    /// Werkzeug's `pbkdf2:sha512:<iterations>$<salt>$<hex>`.
    WerkzeugPbkdf2Sha512,
    /// Werkzeug's `scrypt:<n>:<r>:<p>$<salt>$<hex>` (its default since 3.0).
    WerkzeugScrypt,
    /// Django's (and passlib's `django_pbkdf2_sha256`) `pbkdf2_sha256$<iterations>$<salt>$<base64>`.
    DjangoPbkdf2,
    /// Django's `pbkdf2_sha1$<iterations>$<salt>$<base64>`.
    DjangoPbkdf2Sha1,
    /// Django's `argon2$argon2id$v=19$m=...`: a PHC string behind Django's prefix.
    DjangoArgon2,
    /// Django's `bcrypt_sha256$$2b$...`: bcrypt of the hex SHA-256 of the password.
    DjangoBcryptSha256,
    /// Django's `bcrypt$$2b$...`: bcrypt of the password.
    DjangoBcrypt,
    /// Django's `scrypt$<n>$<salt>$<r>$<p>$<base64>`.
    DjangoScrypt,
    /// passlib's `$pbkdf2$<rounds>$<salt>$<hash>` (PBKDF2-HMAC-SHA1, its adapted base64).
    PasslibPbkdf2Sha1,
    /// passlib's `$pbkdf2-sha256$<rounds>$<salt>$<hash>`.
    PasslibPbkdf2Sha256,
    /// passlib's `$pbkdf2-sha512$<rounds>$<salt>$<hash>`.
    PasslibPbkdf2Sha512,
    /// passlib's `$scrypt$ln=<log2 n>,r=<r>,p=<p>$<salt>$<hash>`.
    PasslibScrypt,
    /// `$5$[rounds=<n>$]<salt>$<hash>`: sha256_crypt (passlib, glibc's crypt).
    Sha256Crypt,
    /// `$6$[rounds=<n>$]<salt>$<hash>`: sha512_crypt (passlib, glibc's crypt).
    Sha512Crypt,
    /// 64 hex digits: an unsalted SHA-256 of the password.
    Sha256,
}

/// Every legacy format (all but argon2, which produto keeps), in the order of the series of
/// `produto_users_legacy_hash`: the one list, which the import, the gauge and its SQL use.
/// Each but the last is told apart by its [`Format::prefix`], none of which begins another;
/// the last, SHA-256 hex, is what is left.
pub const LEGACY: [Format; 18] = [
    Format::Bcrypt,
    Format::WerkzeugPbkdf2,
    Format::WerkzeugPbkdf2Sha1,
    Format::WerkzeugPbkdf2Sha512,
    Format::WerkzeugScrypt,
    Format::DjangoPbkdf2,
    Format::DjangoPbkdf2Sha1,
    Format::DjangoArgon2,
    Format::DjangoBcryptSha256,
    Format::DjangoBcrypt,
    Format::DjangoScrypt,
    Format::PasslibPbkdf2Sha1,
    Format::PasslibPbkdf2Sha256,
    Format::PasslibPbkdf2Sha512,
    Format::PasslibScrypt,
    Format::Sha256Crypt,
    Format::Sha512Crypt,
    Format::Sha256,
];

/// The labels of [`LEGACY`], in its order: the values of the gauge's `format` label.
pub const LEGACY_LABELS: [&str; LEGACY.len()] = {
    let mut labels = [""; LEGACY.len()];
    let mut i = 0;
    while i < LEGACY.len() {
        labels[i] = LEGACY[i].label();
        i += 1;
    }
    labels
};

impl Format {
    /// Its name in reports and in the `format` label of `produto_users_legacy_hash`.
    pub const fn label(self) -> &'static str {
        match self {
            Format::Argon2 => "argon2",
            Format::Bcrypt => "bcrypt",
            Format::WerkzeugPbkdf2 => "werkzeug_pbkdf2_sha256",
            Format::WerkzeugPbkdf2Sha1 => "werkzeug_pbkdf2_sha1",
            Format::WerkzeugPbkdf2Sha512 => "werkzeug_pbkdf2_sha512",
            Format::WerkzeugScrypt => "werkzeug_scrypt",
            Format::DjangoPbkdf2 => "django_pbkdf2_sha256",
            Format::DjangoPbkdf2Sha1 => "django_pbkdf2_sha1",
            Format::DjangoArgon2 => "django_argon2",
            Format::DjangoBcryptSha256 => "django_bcrypt_sha256",
            Format::DjangoBcrypt => "django_bcrypt",
            Format::DjangoScrypt => "django_scrypt",
            Format::PasslibPbkdf2Sha1 => "passlib_pbkdf2_sha1",
            Format::PasslibPbkdf2Sha256 => "passlib_pbkdf2_sha256",
            Format::PasslibPbkdf2Sha512 => "passlib_pbkdf2_sha512",
            Format::PasslibScrypt => "passlib_scrypt",
            Format::Sha256Crypt => "sha256_crypt",
            Format::Sha512Crypt => "sha512_crypt",
            Format::Sha256 => "sha256",
        }
    }

    /// How a stored value of this format begins (`None` for SHA-256 hex, which has no prefix).
    pub const fn prefix(self) -> Option<&'static str> {
        Some(match self {
            Format::Argon2 => "$argon2",
            Format::Bcrypt => "$2",
            Format::WerkzeugPbkdf2 => "pbkdf2:sha256",
            Format::WerkzeugPbkdf2Sha1 => "pbkdf2:sha1",
            Format::WerkzeugPbkdf2Sha512 => "pbkdf2:sha512",
            Format::WerkzeugScrypt => "scrypt:",
            Format::DjangoPbkdf2 => "pbkdf2_sha256$",
            Format::DjangoPbkdf2Sha1 => "pbkdf2_sha1$",
            Format::DjangoArgon2 => "argon2$",
            Format::DjangoBcryptSha256 => "bcrypt_sha256$",
            Format::DjangoBcrypt => "bcrypt$",
            Format::DjangoScrypt => "scrypt$",
            Format::PasslibPbkdf2Sha1 => "$pbkdf2$",
            Format::PasslibPbkdf2Sha256 => "$pbkdf2-sha256$",
            Format::PasslibPbkdf2Sha512 => "$pbkdf2-sha512$",
            Format::PasslibScrypt => "$scrypt$",
            Format::Sha256Crypt => "$5$",
            Format::Sha512Crypt => "$6$",
            Format::Sha256 => return None,
        })
    }

    /// The format a stored value claims by its prefix, well formed or not: argon2, one of
    /// [`LEGACY`], or SHA-256 hex for anything else. Cheap (no parsing): what the gauge counts.
    pub fn of(stored: &str) -> Format {
        std::iter::once(Format::Argon2)
            .chain(LEGACY)
            .find(|f| f.prefix().is_some_and(|p| stored.starts_with(p)))
            .unwrap_or(Format::Sha256)
    }

    /// The index of a stored value's format in [`LEGACY`]; `None` for argon2.
    pub fn legacy_index(stored: &str) -> Option<usize> {
        let format = Format::of(stored);
        LEGACY.iter().position(|f| *f == format)
    }
}

/// Whether a value is shaped like a hash (of a known family, maybe broken): never taken as a
/// plaintext password, so that a damaged hash is reported rather than becoming the password.
pub fn looks_like_a_hash(stored: &str) -> bool {
    Format::of(stored) != Format::Sha256
        || stored.starts_with('$')
        || stored.starts_with("pbkdf2")
        || stored.starts_with("scrypt")
        || (stored.len() == 2 * SHA256_BYTES && stored.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pseudo-random function of a PBKDF2 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    Sha1,
    Sha256,
    Sha512,
}

impl Prf {
    /// Bytes of its output: what each format here stores as the derived key.
    fn output_len(self) -> usize {
        match self {
            Prf::Sha1 => 20,
            Prf::Sha256 => 32,
            Prf::Sha512 => 64,
        }
    }
}

/// A legacy hash, parsed and within the caps: what a login verifies against.
#[derive(Clone, PartialEq, Eq)]
pub enum Legacy {
    /// bcrypt (the whole `$2x$` string: the `bcrypt` crate parses it again; 60 bytes), of the
    /// password or, for Django's `bcrypt_sha256`, of the hex SHA-256 of the password.
    Bcrypt {
        format: Format,
        stored: String,
        prehash: bool,
    },
    /// PBKDF2-HMAC over the salt's bytes: the salt string itself for Werkzeug and Django, its
    /// decoding for passlib.
    Pbkdf2 {
        format: Format,
        prf: Prf,
        iterations: u32,
        salt: Vec<u8>,
        expected: Vec<u8>,
    },
    /// scrypt, N = 2^`log_n`.
    Scrypt {
        format: Format,
        log_n: u8,
        r: u32,
        p: u32,
        salt: Vec<u8>,
        expected: Vec<u8>,
    },
    /// sha256_crypt or sha512_crypt: the whole string, which the `sha-crypt` crate parses again.
    ShaCrypt {
        format: Format,
        stored: String,
    },
    /// Django's argon2: the PHC string after its `argon2` prefix.
    Argon2(String),
    Sha256([u8; SHA256_BYTES]),
}

/// Never the hash itself, so that a stray `{:?}` cannot log it.
impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Legacy({})", self.format().label())
    }
}

impl Legacy {
    /// Recognises a legacy hash by its shape and checks it whole: every part well formed,
    /// the cost within the caps. The error says why, in words that never quote the hash.
    pub fn parse(stored: &str) -> Result<Self, String> {
        let format = Format::of(stored);
        let rest = format
            .prefix()
            .and_then(|p| stored.strip_prefix(p))
            .unwrap_or(stored);
        match format {
            Format::Argon2 => Err("argon2: not a legacy hash (the hasher checks it)".into()),
            Format::Bcrypt => parse_bcrypt(format, stored, false),
            Format::DjangoBcrypt => parse_bcrypt(format, rest, false),
            Format::DjangoBcryptSha256 => parse_bcrypt(format, rest, true),
            Format::WerkzeugPbkdf2 => parse_werkzeug(format, Prf::Sha256, rest),
            Format::WerkzeugPbkdf2Sha1 => parse_werkzeug(format, Prf::Sha1, rest),
            Format::WerkzeugPbkdf2Sha512 => parse_werkzeug(format, Prf::Sha512, rest),
            Format::DjangoPbkdf2 => parse_django_pbkdf2(format, Prf::Sha256, rest),
            Format::DjangoPbkdf2Sha1 => parse_django_pbkdf2(format, Prf::Sha1, rest),
            Format::PasslibPbkdf2Sha1 => parse_passlib_pbkdf2(format, Prf::Sha1, rest),
            Format::PasslibPbkdf2Sha256 => parse_passlib_pbkdf2(format, Prf::Sha256, rest),
            Format::PasslibPbkdf2Sha512 => parse_passlib_pbkdf2(format, Prf::Sha512, rest),
            Format::WerkzeugScrypt => parse_werkzeug_scrypt(rest),
            Format::DjangoScrypt => parse_django_scrypt(rest),
            Format::PasslibScrypt => parse_passlib_scrypt(rest),
            Format::Sha256Crypt | Format::Sha512Crypt => parse_sha_crypt(format, stored, rest),
            Format::DjangoArgon2 => parse_django_argon2(stored),
            Format::Sha256 => {
                if stored.len() != 2 * SHA256_BYTES {
                    return Err(unrecognised(stored));
                }
                let mut digest = [0u8; SHA256_BYTES];
                hex::decode_to_slice(stored, &mut digest).map_err(|_| unrecognised(stored))?;
                Ok(Legacy::Sha256(digest))
            }
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Legacy::Bcrypt { format, .. }
            | Legacy::Pbkdf2 { format, .. }
            | Legacy::Scrypt { format, .. }
            | Legacy::ShaCrypt { format, .. } => *format,
            Legacy::Argon2(_) => Format::DjangoArgon2,
            Legacy::Sha256(_) => Format::Sha256,
        }
    }

    /// The memory its verification takes, in KiB (0 for all but scrypt and argon2): at most
    /// [`MAX_MEMORY_KIB`].
    pub fn memory_kib(&self) -> u64 {
        match self {
            Legacy::Scrypt { log_n, r, .. } => scrypt_memory_kib(*log_n, *r),
            Legacy::Argon2(phc) => argon2_params(phc).map_or(0, |p| u64::from(p.m_cost())),
            _ => 0,
        }
    }

    /// Whether `password` is the one this hash was made from (constant-time comparison).
    /// CPU work: run it on the hashing threads. bcrypt sees only the first 72 bytes of a
    /// password, as it did when the hash was made.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Legacy::Bcrypt {
                stored, prehash, ..
            } => {
                if *prehash {
                    let hex = hex::encode(Sha256::digest(password));
                    bcrypt::verify(hex.as_bytes(), stored).unwrap_or(false)
                } else {
                    bcrypt::verify(password, stored).unwrap_or(false)
                }
            }
            Legacy::Pbkdf2 {
                prf,
                iterations,
                salt,
                expected,
                ..
            } => {
                let mut out = vec![0u8; expected.len()];
                match prf {
                    Prf::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, *iterations, &mut out),
                    Prf::Sha256 => {
                        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, *iterations, &mut out)
                    }
                    Prf::Sha512 => {
                        pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out)
                    }
                }
                bool::from(out.ct_eq(expected))
            }
            Legacy::Scrypt {
                log_n,
                r,
                p,
                salt,
                expected,
                ..
            } => {
                let mut out = vec![0u8; expected.len()];
                scrypt::Params::new(*log_n, *r, *p)
                    .is_ok_and(|params| scrypt::scrypt(password, salt, &params, &mut out).is_ok())
                    && bool::from(out.ct_eq(expected))
            }
            Legacy::ShaCrypt { stored, .. } => sha_crypt::ShaCrypt::default()
                .verify_password(password, stored.as_str())
                .is_ok(),
            // argon2 with the hash's own algorithm, version and parameters, on memory of its
            // own, given back at once (the hashing thread's kept block is produto's size).
            Legacy::Argon2(phc) => argon2::PasswordHash::new(phc).is_ok_and(|hash| {
                argon2::Argon2::default()
                    .verify_password(password, &hash)
                    .is_ok()
            }),
            Legacy::Sha256(expected) => {
                let digest: [u8; SHA256_BYTES] = Sha256::digest(password).into();
                bool::from(digest.ct_eq(expected))
            }
        }
    }
}

/// `$2a$`, `$2b$` or `$2y$`, the cost, then 53 characters of bcrypt's base64.
fn parse_bcrypt(format: Format, stored: &str, prehash: bool) -> Result<Legacy, String> {
    let what = format.label();
    let rest = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| stored.strip_prefix(p))
        .ok_or_else(|| format!("{what}: not a `$2a$`, `$2b$` or `$2y$` bcrypt hash"))?;
    let cost: u32 = rest
        .get(..2)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{what}: the cost is not two digits"))?;
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!(
            "{what}: cost {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST} (the cap on \
             the work one login may cost)"
        ));
    }
    // What `bcrypt::verify` will parse: 60 bytes, the salt and hash in bcrypt's base64.
    stored
        .parse::<bcrypt::HashParts>()
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(Legacy::Bcrypt {
        format,
        stored: stored.to_owned(),
        prehash,
    })
}

/// `:<iterations>$<salt>$<hex>`, after `pbkdf2:<digest>`.
fn parse_werkzeug(format: Format, prf: Prf, rest: &str) -> Result<Legacy, String> {
    let what = format.label();
    let (iterations, rest) = rest
        .split_once('$')
        .ok_or_else(|| format!("{what}: no `$` after the method"))?;
    let Some(iterations) = iterations.strip_prefix(':') else {
        return Err(if iterations.is_empty() {
            format!(
                "{what}: no iteration count (pbkdf2:<digest>:<iterations>$...); the default \
                 depends on the Werkzeug version that made it"
            )
        } else {
            format!("{what}: expected `:<iterations>` after the digest's name")
        });
    };
    let iterations = parse_iterations(what, iterations)?;
    let (salt, digest) = salt_and_digest(what, rest)?;
    let expected = decode_hex(what, digest, prf.output_len())?;
    Ok(Legacy::Pbkdf2 {
        format,
        prf,
        iterations,
        salt: salt.as_bytes().to_vec(),
        expected,
    })
}

/// `<iterations>$<salt>$<base64>`, after `pbkdf2_<digest>$`.
fn parse_django_pbkdf2(format: Format, prf: Prf, rest: &str) -> Result<Legacy, String> {
    let what = format.label();
    let (iterations, rest) = rest
        .split_once('$')
        .ok_or_else(|| format!("{what}: no `$` after the iteration count"))?;
    let iterations = parse_iterations(what, iterations)?;
    let (salt, digest) = salt_and_digest(what, rest)?;
    let expected = decode_base64(what, digest, prf.output_len())?;
    Ok(Legacy::Pbkdf2 {
        format,
        prf,
        iterations,
        salt: salt.as_bytes().to_vec(),
        expected,
    })
}

/// `<rounds>$<salt>$<hash>` in passlib's adapted base64 (`.` for `+`, no padding), after
/// `$pbkdf2[-<digest>]$`. The salt is its decoding.
fn parse_passlib_pbkdf2(format: Format, prf: Prf, rest: &str) -> Result<Legacy, String> {
    let what = format.label();
    let (iterations, rest) = rest
        .split_once('$')
        .ok_or_else(|| format!("{what}: no `$` after the rounds"))?;
    let iterations = parse_iterations(what, iterations)?;
    let (salt, digest) = salt_and_digest(what, rest)?;
    let salt = decode_ab64(salt).ok_or_else(|| format!("{what}: the salt is not base64"))?;
    let expected = decode_ab64(digest)
        .filter(|d| d.len() == prf.output_len())
        .ok_or_else(|| {
            format!(
                "{what}: the hash is not {} bytes of passlib's base64",
                prf.output_len()
            )
        })?;
    Ok(Legacy::Pbkdf2 {
        format,
        prf,
        iterations,
        salt,
        expected,
    })
}

/// `<n>:<r>:<p>$<salt>$<hex>`, after `scrypt:`; the key is 64 bytes.
fn parse_werkzeug_scrypt(rest: &str) -> Result<Legacy, String> {
    let what = Format::WerkzeugScrypt.label();
    let (costs, rest) = rest
        .split_once('$')
        .ok_or_else(|| format!("{what}: no `$` after the parameters"))?;
    let mut costs = costs.split(':');
    let (Some(n), Some(r), Some(p), None) =
        (costs.next(), costs.next(), costs.next(), costs.next())
    else {
        return Err(format!("{what}: expected scrypt:<n>:<r>:<p>$..."));
    };
    let (salt, digest) = salt_and_digest(what, rest)?;
    scrypt_legacy(
        Format::WerkzeugScrypt,
        (n, r, p),
        salt.as_bytes().to_vec(),
        decode_hex(what, digest, 64)?,
    )
}

/// `<n>$<salt>$<r>$<p>$<base64>`, after `scrypt$`; the key is 64 bytes.
fn parse_django_scrypt(rest: &str) -> Result<Legacy, String> {
    let what = Format::DjangoScrypt.label();
    let parts: Vec<&str> = rest.split('$').collect();
    let [n, salt, r, p, digest] = parts[..] else {
        return Err(format!("{what}: expected scrypt$<n>$<salt>$<r>$<p>$<hash>"));
    };
    if salt.is_empty() {
        return Err(format!("{what}: the salt is empty"));
    }
    scrypt_legacy(
        Format::DjangoScrypt,
        (n, r, p),
        salt.as_bytes().to_vec(),
        decode_base64(what, digest, 64)?,
    )
}

/// `ln=<log2 n>,r=<r>,p=<p>$<salt>$<hash>` (base64 without padding), after `$scrypt$`.
fn parse_passlib_scrypt(rest: &str) -> Result<Legacy, String> {
    let what = Format::PasslibScrypt.label();
    let parts: Vec<&str> = rest.split('$').collect();
    let [costs, salt, digest] = parts[..] else {
        return Err(format!(
            "{what}: expected $scrypt$ln=<n>,r=<r>,p=<p>$<salt>$<hash>"
        ));
    };
    let mut costs = costs.split(',');
    let (Some(ln), Some(r), Some(p), None) = (
        costs.next().and_then(|c| c.strip_prefix("ln=")),
        costs.next().and_then(|c| c.strip_prefix("r=")),
        costs.next().and_then(|c| c.strip_prefix("p=")),
        costs.next(),
    ) else {
        return Err(format!("{what}: expected ln=<n>,r=<r>,p=<p>"));
    };
    let ln: u8 = ln
        .parse()
        .ok()
        .filter(|ln| (1..64).contains(ln))
        .ok_or_else(|| format!("{what}: ln is not a number from 1 to 63"))?;
    let salt = decode_b64_no_pad(salt).ok_or_else(|| format!("{what}: the salt is not base64"))?;
    let expected = decode_b64_no_pad(digest)
        .filter(|d| (10..=64).contains(&d.len()))
        .ok_or_else(|| format!("{what}: the hash is not 10 to 64 bytes of base64"))?;
    scrypt_legacy(
        Format::PasslibScrypt,
        (&(1u64 << ln).to_string(), r, p),
        salt,
        expected,
    )
}

/// An scrypt hash from its decimal `n`, `r`, `p`, within the caps.
fn scrypt_legacy(
    format: Format,
    (n, r, p): (&str, &str, &str),
    salt: Vec<u8>,
    expected: Vec<u8>,
) -> Result<Legacy, String> {
    let what = format.label();
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n: &u64| *n > 1 && n.is_power_of_two())
        .ok_or_else(|| format!("{what}: n is not a power of two above 1"))?;
    let (Ok(r), Ok(p)) = (r.parse::<u32>(), p.parse::<u32>()) else {
        return Err(format!("{what}: r or p is not a number"));
    };
    if r == 0 || p == 0 {
        return Err(format!("{what}: r and p must be at least 1"));
    }
    let log_n = n.trailing_zeros() as u8;
    let memory = scrypt_memory_kib(log_n, r);
    let work = memory.saturating_mul(u64::from(p));
    check_memory(what, &format!("n={n}, r={r}, p={p}"), memory, work)?;
    scrypt::Params::new(log_n, r, p).map_err(|_| format!("{what}: parameters scrypt refuses"))?;
    Ok(Legacy::Scrypt {
        format,
        log_n,
        r,
        p,
        salt,
        expected,
    })
}

/// scrypt's memory, 128·N·r bytes, in KiB (saturating).
fn scrypt_memory_kib(log_n: u8, r: u32) -> u64 {
    1u64.checked_shl(u32::from(log_n))
        .and_then(|n| n.checked_mul(u64::from(r)))
        .map_or(u64::MAX, |nr| nr / 8)
}

/// Refuses a memory-hard hash over [`MAX_MEMORY_KIB`] or [`MAX_WORK_KIB`].
fn check_memory(what: &str, costs: &str, memory_kib: u64, work_kib: u64) -> Result<(), String> {
    if memory_kib > MAX_MEMORY_KIB {
        return Err(format!(
            "{what}: {costs} needs {} MiB of memory, above the cap of {} MiB (the most one \
             login may take)",
            memory_kib / 1024,
            MAX_MEMORY_KIB / 1024
        ));
    }
    if work_kib > MAX_WORK_KIB {
        return Err(format!(
            "{what}: {costs} costs {} MiB × passes, above the cap of {} MiB (the work one \
             login may cost)",
            work_kib / 1024,
            MAX_WORK_KIB / 1024
        ));
    }
    Ok(())
}

/// `$5$` or `$6$`, optional `rounds=<n>$`, a salt of 1 to 16 characters, the hash in crypt's
/// base64 (43 or 86 characters).
fn parse_sha_crypt(format: Format, stored: &str, rest: &str) -> Result<Legacy, String> {
    let what = format.label();
    let fields: Vec<&str> = rest.split('$').collect();
    let (rounds, salt, hash) = match fields[..] {
        [rounds, salt, hash] if rounds.starts_with("rounds=") => (Some(&rounds[7..]), salt, hash),
        [salt, hash] => (None, salt, hash),
        _ => {
            return Err(format!(
                "{what}: expected [rounds=<n>$]<salt>$<hash> after the prefix"
            ));
        }
    };
    if let Some(rounds) = rounds {
        let rounds: u32 = rounds
            .parse()
            .map_err(|_| format!("{what}: rounds is not a number"))?;
        if !(MIN_SHA_CRYPT_ROUNDS..=MAX_SHA_CRYPT_ROUNDS).contains(&rounds) {
            return Err(format!(
                "{what}: {rounds} rounds is outside {MIN_SHA_CRYPT_ROUNDS}..={MAX_SHA_CRYPT_ROUNDS} \
                 (the cap on the work one login may cost)"
            ));
        }
    }
    let hash_len = if format == Format::Sha256Crypt {
        43
    } else {
        86
    };
    let crypt64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    };
    if salt.is_empty() || salt.len() > 16 || !crypt64(salt) {
        return Err(format!(
            "{what}: the salt is not 1 to 16 characters of crypt's alphabet"
        ));
    }
    if hash.len() != hash_len || !crypt64(hash) {
        return Err(format!(
            "{what}: the hash is not {hash_len} characters of crypt's alphabet"
        ));
    }
    sha_crypt::PasswordHashRef::new(stored).map_err(|e| format!("{what}: {e}"))?;
    Ok(Legacy::ShaCrypt {
        format,
        stored: stored.to_owned(),
    })
}

/// `argon2$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`: Django's prefix before a PHC string.
fn parse_django_argon2(stored: &str) -> Result<Legacy, String> {
    let what = Format::DjangoArgon2.label();
    let phc = &stored["argon2".len()..];
    let hash = argon2::PasswordHash::new(phc).map_err(|e| format!("{what}: {e}"))?;
    argon2::Algorithm::try_from(hash.algorithm).map_err(|e| format!("{what}: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("{what}: no salt or no hash"));
    }
    let params = argon2_params(phc).map_err(|e| format!("{what}: {e}"))?;
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    check_memory(
        what,
        &format!("m={m} KiB, t={t}, p={p}"),
        u64::from(m),
        u64::from(m) * u64::from(t),
    )?;
    Ok(Legacy::Argon2(phc.to_owned()))
}

fn argon2_params(phc: &str) -> Result<argon2::Params, String> {
    let hash = argon2::PasswordHash::new(phc).map_err(|e| e.to_string())?;
    argon2::Params::try_from(&hash).map_err(|e| e.to_string())
}

fn parse_iterations(what: &str, digits: &str) -> Result<u32, String> {
    let iterations: u32 = digits
        .parse()
        .map_err(|_| format!("{what}: the iteration count is not a number"))?;
    if !(1..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
        return Err(format!(
            "{what}: {iterations} iterations is outside 1..={MAX_PBKDF2_ITERATIONS} (the cap on \
             the work one login may cost)"
        ));
    }
    Ok(iterations)
}

/// `<salt>$<digest>`, neither empty.
fn salt_and_digest<'a>(what: &str, rest: &'a str) -> Result<(&'a str, &'a str), String> {
    match rest.split_once('$') {
        Some((salt, digest)) if !salt.is_empty() && !digest.is_empty() => Ok((salt, digest)),
        _ => Err(format!(
            "{what}: expected `<salt>$<hash>` after the iterations"
        )),
    }
}

fn decode_hex(what: &str, digits: &str, len: usize) -> Result<Vec<u8>, String> {
    hex::decode(digits)
        .ok()
        .filter(|d| d.len() == len)
        .ok_or_else(|| format!("{what}: the hash is not {} hex digits", 2 * len))
}

fn decode_base64(what: &str, text: &str, len: usize) -> Result<Vec<u8>, String> {
    let decoded = STANDARD
        .decode(text)
        .map_err(|_| format!("{what}: the hash is not base64"))?;
    if decoded.len() != len {
        return Err(format!(
            "{what}: the hash is {} bytes, not {len}",
            decoded.len()
        ));
    }
    Ok(decoded)
}

/// Standard base64, its padding optional.
fn decode_b64_no_pad(text: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// passlib's adapted base64: `.` for `+`, no padding.
fn decode_ab64(text: &str) -> Option<Vec<u8>> {
    decode_b64_no_pad(&text.replace('.', "+"))
}

/// Why an unrecognised value is refused, naming what it looks like without quoting it.
fn unrecognised(stored: &str) -> String {
    let hint = if stored.starts_with("pbkdf2:") {
        " (Werkzeug pbkdf2 with a digest other than sha1, sha256, sha512 is not supported)"
    } else if stored.starts_with("$1$") || stored.starts_with("md5$") {
        " (MD5 hashes are not supported)"
    } else if stored.starts_with('$') {
        " (a `$...$` hash of a scheme not supported)"
    } else if stored.contains('$') {
        " (a `...$...` hash of a scheme not supported)"
    } else if stored.is_empty() {
        " (empty)"
    } else {
        ""
    };
    format!(
        "unrecognised password format{hint}: not argon2, bcrypt, scrypt, PBKDF2 or sha-crypt as \
         Werkzeug, Django or passlib store them, nor SHA-256 hex (docs/moving-from-the-old-bot.md \
         lists them; plaintext? see --plaintext-passwords)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn werkzeug(password: &str, salt: &str, iterations: u32) -> String {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
        format!("pbkdf2:sha256:{iterations}${salt}${}", hex::encode(out))
    }

    #[test]
    fn each_format_verifies_its_password_and_no_other() {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"senha django", b"s4lt", 1000, &mut out);
        let django = format!("pbkdf2_sha256$1000$s4lt${}", STANDARD.encode(out));
        let cases = [
            (
                bcrypt::hash("senha bcrypt", 4).unwrap(),
                "senha bcrypt",
                Format::Bcrypt,
            ),
            (
                werkzeug("senha werkzeug", "abcd", 1000),
                "senha werkzeug",
                Format::WerkzeugPbkdf2,
            ),
            (django, "senha django", Format::DjangoPbkdf2),
            (
                hex::encode(Sha256::digest(b"senha sha")),
                "senha sha",
                Format::Sha256,
            ),
            (
                hex::encode_upper(Sha256::digest(b"senha SHA")),
                "senha SHA",
                Format::Sha256,
            ),
        ];
        for (stored, password, format) in cases {
            let legacy = Legacy::parse(&stored).unwrap();
            assert_eq!(legacy.format(), format);
            assert_eq!(Format::of(&stored), format);
            assert!(legacy.verify(password.as_bytes()), "{format:?}");
            assert!(!legacy.verify(b"wrong"), "{format:?}");
            assert!(!format!("{legacy:?}").contains(&stored));
        }
    }

    /// Known answers made by the reference implementations, so that the formats are theirs
    /// and not only ours: Werkzeug 3.1.8's `generate_password_hash("secret", method)`;
    /// Django 5.2's hashers' `encode("secret", ...)` (its PBKDF2 algorithm as base64 of
    /// `hashlib.pbkdf2_hmac("sha256", b"secret", b"salt", 1000)`); passlib 1.7.4's
    /// `<scheme>.using(rounds=...).hash("secret")`; PHP's `password_hash` `$2y$` example from
    /// its manual (password `rasmuslerdorf`). Costs lowered so that the test is quick; the
    /// API test (`tests/api/legacy_hashes.rs`) makes them with the libraries' defaults.
    #[test]
    fn the_reference_implementations_hashes_verify() {
        let secret = [
            (
                "pbkdf2:sha256:1000$4tAO8gYBtNJMOCDW$\
                 7129318c78fe3256eb6fe6fe842ebf415a53478243960338f4f8de2255424de1",
                Format::WerkzeugPbkdf2,
            ),
            (
                "pbkdf2:sha1:1000$f2qs8JKPuseL2GX9$9857875521622cdb2406b775f7ceb25baa593513",
                Format::WerkzeugPbkdf2Sha1,
            ),
            (
                "pbkdf2:sha512:1000$crONIZA8Vke8wrgX$e7e28b15cd4e8240786a76f9d35ac9ee3bb631095\
                 028adb9963996b4de5e1aa45aca97fa29136d5c3b1ffce5fd519fa848df69cf6a1fcfd4c42879\
                 3d43567012",
                Format::WerkzeugPbkdf2Sha512,
            ),
            (
                "scrypt:1024:8:1$2dCru39NnXH8aXqN$3445a61967fad29a6ff121581c878730e262f8002c18\
                 bdaceeb2e70486a6a9007162556ee00921925d8f5bf91af6270ce4574654a88516ea23e9a6135\
                 53b9f67",
                Format::WerkzeugScrypt,
            ),
            (
                "pbkdf2_sha256$1000$salt$qN+JnzxPIE2WfgrWPAkph8EAVeuwF7PZ0ordIY1Peq0=",
                Format::DjangoPbkdf2,
            ),
            (
                "pbkdf2_sha1$1000$s4lt$izH/HZvdyjQiN6ylnjKlwNRtw1E=",
                Format::DjangoPbkdf2Sha1,
            ),
            (
                "argon2$argon2id$v=19$m=1024,t=1,p=2$TDhuNDBQaHFIY25na2pqWmEwZE9mbw$\
                 gV3kiLH6/Lg3iWS/i98cX5m52ClcTCAd/ut+VrTJviM",
                Format::DjangoArgon2,
            ),
            (
                "bcrypt_sha256$$2b$04$qolNJl50kYnSLW5JaOP.yu60HEs6tLBwdCKKYZwzfSH.S6pQ1iXoy",
                Format::DjangoBcryptSha256,
            ),
            (
                "bcrypt$$2b$04$ytRrJwF2e1m47SteveWm3OIEmyKo4U6ROos2nf2Dwam76fyFwRqXe",
                Format::DjangoBcrypt,
            ),
            (
                "scrypt$1024$s4lt$8$2$T6EynPuKWsYPKk38QE3/zf87E6Q6oAejgJRj3CCmX0fLCbDReqRj4llA\
                 WyUQBKLJ3gUokiFCOyEozOCsoHIFMQ==",
                Format::DjangoScrypt,
            ),
            (
                "$pbkdf2$1000$rtX633tvDYHwnjMmhJCSEg$mbDgJJwoTrvh1DPU5EBYzL4qWu8",
                Format::PasslibPbkdf2Sha1,
            ),
            (
                "$pbkdf2-sha256$1000$hLBWak0J4dxbK0XIWas1Zg$\
                 CSoOExLV5enCu15XHU6Y2W5d8VnKV7LymAfF./N0BLA",
                Format::PasslibPbkdf2Sha256,
            ),
            (
                "$pbkdf2-sha512$1000$m1PKuffe2zsnxBjj3DuHUA$r52EVtDwqm..sDXkg3Kdh0mKQLNNUQpSAlC\
                 bQDZ0Rj618IaNy/Dwb99TA4UTxkcgG9sLjLaw3sB0yFB9s2D2mA",
                Format::PasslibPbkdf2Sha512,
            ),
            (
                "$scrypt$ln=10,r=8,p=1$YMwZ49y7l7I2ZszZm5OyVg$\
                 xzTru5eMVUpQ8MB769RpjJ9+oi/LWNlxqoiEoSYVHAo",
                Format::PasslibScrypt,
            ),
            (
                "$5$rounds=1000$2MyCKRA3i5xVciz2$h4UxEx34jEjuFqMRrpJStcgIokhhx26t7ajt7FPKJC/",
                Format::Sha256Crypt,
            ),
            (
                "$6$KVDU8UggoheQSP9K$DpzmHRhGlRL2dCaN4E/k0JdFtNZSk8PRixAh82aHQcv9x8nBOkCuQ1x4an\
                 Lqm6EAy4bpnqIBbKVTnHi1KaLFz1",
                Format::Sha512Crypt,
            ),
        ];
        for (stored, format) in secret {
            let legacy = Legacy::parse(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert_eq!(legacy.format(), format, "{stored}");
            assert!(legacy.verify(b"secret"), "{stored}");
            assert!(!legacy.verify(b"Secret"), "{stored}");
        }
        let php =
            Legacy::parse("$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a").unwrap();
        assert!(php.verify(b"rasmuslerdorf"));
        assert!(!php.verify(b"rasmuslerdorF"));
    }

    #[test]
    fn costs_above_the_caps_are_refused_before_any_work() {
        let bcrypt14 = bcrypt::hash("x", 4).unwrap().replacen("$04$", "$14$", 1);
        assert!(Legacy::parse(&bcrypt14).unwrap_err().contains("cost 14"));
        let many = werkzeug("x", "abcd", 1).replacen(":1$", ":2000001$", 1);
        assert!(
            Legacy::parse(&many)
                .unwrap_err()
                .contains("2000001 iterations")
        );
        let at_the_cap = werkzeug("x", "abcd", 1).replacen(":1$", ":2000000$", 1);
        assert!(Legacy::parse(&at_the_cap).is_ok());
        assert!(Legacy::parse("pbkdf2_sha256$0$s$AAAA").is_err());
        let h64 = "00".repeat(64);
        for (stored, reason) in [
            // 128 · 2^17 · 8 bytes = 128 MiB.
            (format!("scrypt:131072:8:1$salt${h64}"), "128 MiB of memory"),
            (format!("scrypt:16384:8:26$salt${h64}"), "MiB × passes"),
            (
                format!("scrypt$131072$salt$8$1${}", STANDARD.encode([0u8; 64])),
                "128 MiB of memory",
            ),
            (
                "$scrypt$ln=17,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA".into(),
                "128 MiB",
            ),
            (
                "argon2$argon2id$v=19$m=204800,t=2,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
                "200 MiB of memory",
            ),
            (
                "argon2$argon2id$v=19$m=102400,t=5,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
                "MiB × passes",
            ),
            (
                format!("$6$rounds=1000001$salt${}", "a".repeat(86)),
                "1000001 rounds",
            ),
            (
                format!("$5$rounds=999$salt${}", "a".repeat(43)),
                "999 rounds",
            ),
            (
                format!("bcrypt_sha256${}", bcrypt14.as_str()),
                "django_bcrypt_sha256: cost 14",
            ),
            (
                "$pbkdf2-sha256$2000001$AAAA$AAAA".into(),
                "passlib_pbkdf2_sha256: 2000001 iterations",
            ),
        ] {
            let err = Legacy::parse(&stored).unwrap_err();
            assert!(err.contains(reason), "{stored}: {err}");
            assert!(err.contains("cap") || err.contains("outside"), "{err}");
        }
        // At the caps: Django's argon2 and passlib's scrypt defaults pass.
        let at_cap = "argon2$argon2id$v=19$m=102400,t=2,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert_eq!(Legacy::parse(at_cap).unwrap().memory_kib(), 102_400);
        let passlib = format!(
            "$scrypt$ln=16,r=8,p=1$AAAA${}",
            STANDARD_NO_PAD.encode([0u8; 32])
        );
        assert_eq!(Legacy::parse(&passlib).unwrap().memory_kib(), 64 * 1024);
    }

    #[test]
    fn broken_values_are_refused_with_a_reason_that_never_quotes_them() {
        let secretish = "hunter2-plaintext";
        let h64 = "00".repeat(64);
        let crypt86 = "a".repeat(86);
        for (stored, reason) in [
            (secretish.to_owned(), "unrecognised password format"),
            (String::new(), "(empty)"),
            ("$2b$10$tooshort".into(), "bcrypt:"),
            ("$2b$xx$".into(), "cost is not two digits"),
            ("$2x$10$".into(), "not a `$2a$`"),
            ("pbkdf2:sha256$salt$00".into(), "no iteration count"),
            (
                "pbkdf2:sha256x:1000$salt$00".into(),
                "after the digest's name",
            ),
            ("pbkdf2:md5:1000$salt$00".into(), "sha1, sha256, sha512"),
            ("pbkdf2:sha256:1000$salt$zz".into(), "hex digits"),
            ("pbkdf2:sha1:1000$salt$00".into(), "40 hex digits"),
            ("pbkdf2:sha256:1000$$00".into(), "<salt>$<hash>"),
            ("pbkdf2_sha256$1000$salt$!!!".into(), "not base64"),
            ("pbkdf2_sha256$1000$salt$AAAA".into(), "3 bytes, not 32"),
            ("pbkdf2_sha256$many$salt$AAAA".into(), "not a number"),
            ("pbkdf2_sha1$1000$salt".into(), "<salt>$<hash>"),
            ("scrypt:32768:8$salt$00".into(), "scrypt:<n>:<r>:<p>"),
            (format!("scrypt:32769:8:1$salt${h64}"), "power of two"),
            (format!("scrypt:32768:0:1$salt${h64}"), "at least 1"),
            (format!("scrypt:32768:8:x$salt${h64}"), "not a number"),
            ("scrypt:32768:8:1$salt$00".into(), "128 hex digits"),
            ("scrypt$16384$salt$8$1".into(), "scrypt$<n>$<salt>"),
            ("scrypt$16384$$8$1$AAAA".into(), "salt is empty"),
            ("$scrypt$ln=99,r=8,p=1$AAAA$AAAA".into(), "ln is not"),
            ("$scrypt$n=16,r=8,p=1$AAAA$AAAA".into(), "ln=<n>"),
            ("$scrypt$ln=10,r=8,p=1$AAAA$AA".into(), "10 to 64 bytes"),
            ("$pbkdf2-sha256$1000$AAAA$AAAA".into(), "32 bytes"),
            ("$pbkdf2-sha256$1000$!!$AAAA".into(), "salt is not base64"),
            ("$pbkdf2$1000".into(), "no `$` after the rounds"),
            ("$6$salt".into(), "[rounds=<n>$]"),
            (
                format!("$6$rounds=x$salt${crypt86}"),
                "rounds is not a number",
            ),
            (format!("$6$${crypt86}"), "1 to 16 characters"),
            (
                format!("$6${}${crypt86}", "s".repeat(17)),
                "1 to 16 characters",
            ),
            ("$6$salt$short".into(), "86 characters"),
            (format!("$5$salt${crypt86}"), "43 characters"),
            (
                "argon2$argon2id$v=19$m=1024,t=1,p=1".into(),
                "django_argon2:",
            ),
            (
                "argon2$argon2x$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA".into(),
                "django_argon2:",
            ),
            ("bcrypt$$2b$10$tooshort".into(), "django_bcrypt:"),
            ("bcrypt_sha256$plain".into(), "django_bcrypt_sha256: not a"),
            ("$1$salt$hash".into(), "MD5"),
            ("md5$salt$hash".into(), "MD5"),
            ("sha1$salt$hash".into(), "`...$...` hash"),
            ("$7$whatever".into(), "`$...$` hash"),
            ("a".repeat(63), "unrecognised"),
            ("g".repeat(64), "unrecognised"),
        ] {
            let err = Legacy::parse(&stored).unwrap_err();
            assert!(err.contains(reason), "{stored:?}: {err}");
            if stored.len() > 4 {
                assert!(!err.contains(&stored), "{err}");
            }
        }
    }

    /// Whatever the bytes, parsing answers (an error or a hash): it never panics. Every
    /// prefix, followed by pieces of the formats' own grammar in any order.
    #[test]
    fn parsing_never_panics_on_any_mix_of_the_formats_pieces() {
        let pieces = [
            "$",
            ":",
            ",",
            "=",
            "0",
            "1",
            "4",
            "12",
            "99",
            "1000",
            "4294967296",
            "rounds=",
            "ln=",
            "r=",
            "p=",
            "m=",
            "t=",
            "v=19",
            "argon2id",
            "$2b$",
            "é",
            "\u{0}",
            "AAAA",
            "a.b/",
            "==",
            "-1",
            "18446744073709551616",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let prefixes: Vec<&str> = std::iter::once("")
            .chain(LEGACY.iter().filter_map(|f| f.prefix()))
            .collect();
        for _ in 0..20_000 {
            let mut stored = prefixes[(next() % prefixes.len() as u64) as usize].to_owned();
            for _ in 0..(next() % 10) {
                stored.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            // Only parsing: a value that parses is not verified here (its cost may be real).
            let _ = Legacy::parse(&stored);
            let _ = Format::of(&stored);
            let _ = looks_like_a_hash(&stored);
        }
    }

    #[test]
    fn the_list_of_formats_tells_each_apart_by_its_prefix() {
        let prefixes: Vec<&str> = std::iter::once(Format::Argon2)
            .chain(LEGACY)
            .filter_map(Format::prefix)
            .collect();
        // None begins another, so that the order of the checks (here and in the gauge's SQL)
        // cannot matter, and none holds a quote (the SQL is built from them).
        for a in &prefixes {
            assert!(!a.contains('\''), "{a}");
            for b in &prefixes {
                assert!(a == b || !b.starts_with(a), "{a} begins {b}");
            }
        }
        assert_eq!(LEGACY.last(), Some(&Format::Sha256));
        assert_eq!(prefixes.len(), LEGACY.len());
        for (format, label) in LEGACY.iter().zip(LEGACY_LABELS) {
            assert_eq!(format.label(), label);
            if let Some(prefix) = format.prefix() {
                assert_eq!(Format::of(prefix), *format);
                assert_eq!(
                    Format::legacy_index(prefix),
                    LEGACY.iter().position(|f| f == format)
                );
            }
        }
        assert_eq!(Format::legacy_index("$argon2id$v=19$"), None);
        assert_eq!(Format::legacy_index("anything"), Some(LEGACY.len() - 1));
        // Hash-shaped values are never taken for a plaintext password; others may be.
        assert!(looks_like_a_hash("bcrypt$damaged"));
        assert!(looks_like_a_hash("$1$md5"));
        assert!(looks_like_a_hash("scrypt$"));
        assert!(!looks_like_a_hash("correct horse"));
    }
}
