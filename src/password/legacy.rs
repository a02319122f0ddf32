//! Password hashes made by other software (the old bot's table), recognised by their shape
//! and verified as they are, so that imported users keep their passwords; the first login
//! with one re-hashes the password with argon2id (see [`super::Hasher::verify`]).
//!
//! A stored hash is data: its cost (bcrypt's cost, PBKDF2's iteration count) is checked
//! against a cap before any work, at import and again at every login.

use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Highest bcrypt cost accepted (2^13 rounds; Python's bcrypt and PHP 8.4 default to 12).
/// One guess at cost 13 holds a hashing thread ~24 times as long as produto's argon2id
/// (docs/moving-from-the-old-bot.md has the figures); past it, seconds.
pub const MAX_BCRYPT_COST: u32 = 13;
/// Lowest cost bcrypt itself accepts.
const MIN_BCRYPT_COST: u32 = 4;
/// Highest PBKDF2 iteration count accepted (Django 5.2 stores 1 000 000, Werkzeug 3.1
/// 1 000 000, older versions 150 000 to 870 000).
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// Bytes of a SHA-256 output, which every SHA-256 format here stores.
const SHA256_BYTES: usize = 32;

/// The shapes of stored password recognised, for the import's report and the metric of
/// users still on a legacy hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// An argon2 PHC string (`$argon2id$...`): produto's own.
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// Werkzeug's (Flask's) `pbkdf2:sha256:<iterations>$<salt>$<hex>`.
    WerkzeugPbkdf2,
    /// Django's (and passlib's `django_pbkdf2_sha256`) `pbkdf2_sha256$<iterations>$<salt>$<base64>`.
    DjangoPbkdf2,
    /// 64 hex digits: an unsalted SHA-256 of the password.
    Sha256,
}

impl Format {
    /// The legacy formats: every format but produto's own, in the order the import's report
    /// and the `produto_users_legacy_hash` gauge list them. The one list of them.
    pub const LEGACY: [Format; 4] = [
        Format::Bcrypt,
        Format::WerkzeugPbkdf2,
        Format::DjangoPbkdf2,
        Format::Sha256,
    ];

    /// Its name in reports and in the `format` label of `produto_users_legacy_hash`.
    pub fn label(self) -> &'static str {
        match self {
            Format::Argon2 => "argon2",
            Format::Bcrypt => "bcrypt",
            Format::WerkzeugPbkdf2 => "werkzeug_pbkdf2_sha256",
            Format::DjangoPbkdf2 => "django_pbkdf2_sha256",
            Format::Sha256 => "sha256",
        }
    }
}

/// A legacy hash, parsed and within the caps: what a login verifies against.
#[derive(Clone, PartialEq, Eq)]
pub enum Legacy {
    /// The whole string (the `bcrypt` crate parses it again; it is 60 bytes).
    Bcrypt(String),
    /// PBKDF2-HMAC-SHA256 over the salt's bytes as stored (both Werkzeug and Django use the
    /// salt string itself, not a decoding of it).
    Pbkdf2 {
        format: Format,
        iterations: u32,
        salt: String,
        expected: [u8; SHA256_BYTES],
    },
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
        if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
            .iter()
            .find_map(|p| stored.strip_prefix(p))
        {
            return parse_bcrypt(stored, rest);
        }
        if let Some(rest) = stored.strip_prefix("pbkdf2:") {
            return parse_werkzeug(rest);
        }
        if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
            return parse_django(rest);
        }
        if stored.len() == 2 * SHA256_BYTES && stored.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut digest = [0u8; SHA256_BYTES];
            hex::decode_to_slice(stored, &mut digest).map_err(|e| format!("sha256 hex: {e}"))?;
            return Ok(Legacy::Sha256(digest));
        }
        Err(unrecognised(stored))
    }

    pub fn format(&self) -> Format {
        match self {
            Legacy::Bcrypt(_) => Format::Bcrypt,
            Legacy::Pbkdf2 { format, .. } => *format,
            Legacy::Sha256(_) => Format::Sha256,
        }
    }

    /// Whether `password` is the one this hash was made from (constant-time comparison).
    /// CPU work: run it on the hashing threads. bcrypt sees only the first 72 bytes of a
    /// password, as it did when the hash was made.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Legacy::Bcrypt(stored) => bcrypt::verify(password, stored).unwrap_or(false),
            Legacy::Pbkdf2 {
                iterations,
                salt,
                expected,
                ..
            } => {
                let mut out = [0u8; SHA256_BYTES];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt.as_bytes(), *iterations, &mut out);
                bool::from(out.ct_eq(expected))
            }
            Legacy::Sha256(expected) => {
                let digest: [u8; SHA256_BYTES] = Sha256::digest(password).into();
                bool::from(digest.ct_eq(expected))
            }
        }
    }
}

fn parse_bcrypt(stored: &str, rest: &str) -> Result<Legacy, String> {
    let cost: u32 = rest
        .get(..2)
        .and_then(|c| c.parse().ok())
        .ok_or("bcrypt: the cost is not two digits")?;
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!(
            "bcrypt: cost {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST} (the cap on \
             the work one login may cost)"
        ));
    }
    // What `bcrypt::verify` will parse: 60 bytes, the salt and hash in bcrypt's base64.
    stored
        .parse::<bcrypt::HashParts>()
        .map_err(|e| format!("bcrypt: {e}"))?;
    Ok(Legacy::Bcrypt(stored.to_owned()))
}

/// `sha256:<iterations>$<salt>$<hex>`, after `pbkdf2:`.
fn parse_werkzeug(rest: &str) -> Result<Legacy, String> {
    let (method, rest) = rest
        .split_once('$')
        .ok_or("werkzeug pbkdf2: no `$` after the method")?;
    let (algorithm, iterations) = method.split_once(':').unwrap_or((method, ""));
    if algorithm != "sha256" {
        return Err(format!(
            "werkzeug pbkdf2 with {algorithm:?}: only sha256 is supported"
        ));
    }
    if iterations.is_empty() {
        return Err(
            "werkzeug pbkdf2: no iteration count (pbkdf2:sha256:<iterations>$...); the default \
             depends on the Werkzeug version that made it"
                .into(),
        );
    }
    let iterations = parse_iterations("werkzeug pbkdf2", iterations)?;
    let (salt, digest) = salt_and_digest("werkzeug pbkdf2", rest)?;
    let mut expected = [0u8; SHA256_BYTES];
    hex::decode_to_slice(digest, &mut expected).map_err(|_| {
        format!(
            "werkzeug pbkdf2: the hash is not {} hex digits",
            2 * SHA256_BYTES
        )
    })?;
    Ok(Legacy::Pbkdf2 {
        format: Format::WerkzeugPbkdf2,
        iterations,
        salt: salt.to_owned(),
        expected,
    })
}

/// `<iterations>$<salt>$<base64>`, after `pbkdf2_sha256$`.
fn parse_django(rest: &str) -> Result<Legacy, String> {
    let (iterations, rest) = rest
        .split_once('$')
        .ok_or("django pbkdf2: no `$` after the iteration count")?;
    let iterations = parse_iterations("django pbkdf2", iterations)?;
    let (salt, digest) = salt_and_digest("django pbkdf2", rest)?;
    let decoded = STANDARD
        .decode(digest)
        .map_err(|_| "django pbkdf2: the hash is not base64".to_owned())?;
    let expected: [u8; SHA256_BYTES] = decoded.try_into().map_err(|d: Vec<u8>| {
        format!(
            "django pbkdf2: the hash is {} bytes, not {SHA256_BYTES}",
            d.len()
        )
    })?;
    Ok(Legacy::Pbkdf2 {
        format: Format::DjangoPbkdf2,
        iterations,
        salt: salt.to_owned(),
        expected,
    })
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

/// Why an unrecognised value is refused, naming what it looks like without quoting it.
fn unrecognised(stored: &str) -> String {
    let hint = if stored.starts_with("scrypt:") {
        " (Werkzeug's scrypt is not supported)"
    } else if stored.starts_with('$') {
        " (a `$...$` hash of a scheme not supported)"
    } else if stored.is_empty() {
        " (empty)"
    } else {
        ""
    };
    format!(
        "unrecognised password format{hint}: not argon2, bcrypt, Werkzeug or Django \
         pbkdf2_sha256, nor SHA-256 hex (plaintext? see --plaintext-passwords)"
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
            assert!(legacy.verify(password.as_bytes()), "{format:?}");
            assert!(!legacy.verify(b"wrong"), "{format:?}");
            assert!(!format!("{legacy:?}").contains(&stored));
        }
    }

    /// Known answers made by the reference implementations, so that the formats are theirs
    /// and not only ours: Werkzeug 3.1.8's `generate_password_hash("secret",
    /// "pbkdf2:sha256:1000")`; Django's `PBKDF2PasswordHasher` algorithm (base64 of
    /// `hashlib.pbkdf2_hmac("sha256", b"secret", b"salt", 1000)`, Python's hashlib); PHP's
    /// `password_hash` `$2y$` example from its manual (password `rasmuslerdorf`).
    #[test]
    fn the_reference_implementations_hashes_verify() {
        let werkzeug = "pbkdf2:sha256:1000$4tAO8gYBtNJMOCDW$\
            7129318c78fe3256eb6fe6fe842ebf415a53478243960338f4f8de2255424de1";
        let django = "pbkdf2_sha256$1000$salt$qN+JnzxPIE2WfgrWPAkph8EAVeuwF7PZ0ordIY1Peq0=";
        for stored in [werkzeug, django] {
            let legacy = Legacy::parse(stored).unwrap();
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
        let many = werkzeug("x", "abcd", 1).replacen(":1$", ":1000001$", 1);
        assert!(
            Legacy::parse(&many)
                .unwrap_err()
                .contains("1000001 iterations")
        );
        assert!(Legacy::parse("pbkdf2_sha256$0$s$AAAA").is_err());
    }

    #[test]
    fn broken_values_are_refused_with_a_reason_that_never_quotes_them() {
        let secretish = "hunter2-plaintext";
        for (stored, reason) in [
            (secretish, "unrecognised password format"),
            ("", "(empty)"),
            ("$2b$10$tooshort", "bcrypt:"),
            ("$2b$xx$", "cost is not two digits"),
            ("pbkdf2:sha256$salt$00", "no iteration count"),
            ("pbkdf2:sha1:1000$salt$00", "only sha256"),
            ("pbkdf2:sha256:1000$salt$zz", "hex digits"),
            ("pbkdf2:sha256:1000$$00", "<salt>$<hash>"),
            ("pbkdf2_sha256$1000$salt$!!!", "not base64"),
            ("pbkdf2_sha256$1000$salt$AAAA", "3 bytes, not 32"),
            ("pbkdf2_sha256$many$salt$AAAA", "not a number"),
            ("scrypt:32768:8:1$salt$00", "scrypt is not supported"),
            (&"a".repeat(63), "unrecognised"),
        ] {
            let err = Legacy::parse(stored).unwrap_err();
            assert!(err.contains(reason), "{stored:?}: {err}");
            if stored.len() > 4 {
                assert!(!err.contains(stored), "{err}");
            }
        }
    }
}
