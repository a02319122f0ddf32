"""Password hashes as the old Python bots stored them, made by the real libraries.

Prints one JSON object of lists:
- `versions`: each library's version;
- `ok`: [produto's format label, what made it, hash, password], made with the libraries'
  defaults but for PBKDF2's iteration count (20 000 here: 1 000 000 iterations, Django's and
  Werkzeug's default, take seconds per login in the tests' unoptimised builds);
- `defaults`: [label, what made it, hash] for the PBKDF2 hashes at their libraries' default
  counts, which produto must accept (the test imports them dry, without logging in);
- `over_cap`: [what made it, hash, the words produto's refusal must hold], made by the same
  libraries with costs above produto's caps.
The labels are produto's (`password::legacy::Format::label`).
tests/api/legacy_hashes.rs runs it (pip install -r tests/python/requirements.txt).
"""

import importlib.metadata
import json
import logging
import warnings

# passlib 1.7.4 logs a harmless traceback while reading bcrypt 4's version, and Python 3.11
# warns about the `crypt` module passlib may use: neither concerns the hashes.
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")

import bcrypt  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure()

from django.contrib.auth import hashers as django  # noqa: E402
from passlib import hash as passlib  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402


# PBKDF2's iteration count for the hashes the test logs in with (see above).
ITERATIONS = 20_000


def password(label):
    """A password per format: spaces and a non-ASCII letter, as real ones have."""
    return f"senha de {label} é boa"


def main():
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.BCryptPasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ]
    def werkzeug(method):
        return lambda p: generate_password_hash(p, method)

    def dj(hasher):
        return lambda p: django.make_password(p, hasher=hasher)

    def dj_pbkdf2(hasher):
        return lambda p: hasher().encode(p, hasher().salt(), iterations=ITERATIONS)

    pbkdf2_defaults = [
        ("werkzeug_pbkdf2_sha256", "Werkzeug", werkzeug("pbkdf2")),
        ("werkzeug_pbkdf2_sha1", "Werkzeug", werkzeug("pbkdf2:sha1")),
        ("werkzeug_pbkdf2_sha512", "Werkzeug", werkzeug("pbkdf2:sha512")),
        ("django_pbkdf2_sha256", "Django", dj("pbkdf2_sha256")),
        ("django_pbkdf2_sha1", "Django", dj("pbkdf2_sha1")),
        ("passlib_pbkdf2_sha1", "passlib", passlib.pbkdf2_sha1.hash),
        ("passlib_pbkdf2_sha256", "passlib", passlib.pbkdf2_sha256.hash),
        ("passlib_pbkdf2_sha512", "passlib", passlib.pbkdf2_sha512.hash),
    ]
    defaults = [[label, by, make("x")] for label, by, make in pbkdf2_defaults]

    made = [
        # Werkzeug 3: scrypt by default; pbkdf2 as Werkzeug 2 made it, and with other digests.
        ("werkzeug_scrypt", "Werkzeug", generate_password_hash),
        ("werkzeug_pbkdf2_sha256", "Werkzeug", werkzeug(f"pbkdf2:sha256:{ITERATIONS}")),
        ("werkzeug_pbkdf2_sha1", "Werkzeug", werkzeug(f"pbkdf2:sha1:{ITERATIONS}")),
        ("werkzeug_pbkdf2_sha512", "Werkzeug", werkzeug(f"pbkdf2:sha512:{ITERATIONS}")),
        ("django_pbkdf2_sha256", "Django", dj_pbkdf2(django.PBKDF2PasswordHasher)),
        ("django_pbkdf2_sha1", "Django", dj_pbkdf2(django.PBKDF2SHA1PasswordHasher)),
        ("django_argon2", "Django", dj("argon2")),
        ("django_bcrypt_sha256", "Django", dj("bcrypt_sha256")),
        ("django_bcrypt", "Django", dj("bcrypt")),
        ("django_scrypt", "Django", dj("scrypt")),
        ("passlib_pbkdf2_sha1", "passlib", passlib.pbkdf2_sha1.using(rounds=ITERATIONS).hash),
        ("passlib_pbkdf2_sha256", "passlib", passlib.pbkdf2_sha256.using(rounds=ITERATIONS).hash),
        ("passlib_pbkdf2_sha512", "passlib", passlib.pbkdf2_sha512.using(rounds=ITERATIONS).hash),
        ("passlib_scrypt", "passlib", passlib.scrypt.hash),
        ("sha256_crypt", "passlib", passlib.sha256_crypt.hash),
        ("sha512_crypt", "passlib", passlib.sha512_crypt.hash),
        ("bcrypt", "passlib", passlib.bcrypt.hash),
        # argon2 PHC strings as passlib (over argon2-cffi) stores them: produto's own format.
        ("argon2", "passlib", passlib.argon2.hash),
    ]
    ok = [[label, by, make(password(label)), password(label)] for label, by, make in made]
    # Plain bcrypt from Python's bcrypt itself, beside passlib's.
    ok.append(
        [
            "bcrypt",
            "bcrypt",
            bcrypt.hashpw(password("Python's bcrypt").encode(), bcrypt.gensalt()).decode(),
            password("Python's bcrypt"),
        ]
    )

    over_cap = [
        # 128 MiB of scrypt memory: over the 100 MiB cap.
        [
            "werkzeug_scrypt_128_mib",
            generate_password_hash("x", "scrypt:131072:8:1"),
            "werkzeug_scrypt: n=131072, r=8, p=1 needs 128 MiB of memory",
        ],
        [
            "passlib_scrypt_128_mib",
            passlib.scrypt.using(rounds=17).hash("x"),
            "passlib_scrypt: n=131072, r=8, p=1 needs 128 MiB of memory",
        ],
        [
            "django_argon2_200_mib",
            _django_argon2(204800),
            "django_argon2: m=204800 KiB, t=2, p=8 needs 200 MiB of memory",
        ],
        [
            "django_pbkdf2_sha256_2000001",
            django.PBKDF2PasswordHasher().encode("x", "s4ltS4ltS4lt", iterations=2_000_001),
            "django_pbkdf2_sha256: 2000001 iterations is outside",
        ],
        [
            "sha512_crypt_1000001",
            passlib.sha512_crypt.using(rounds=1_000_001).hash("x"),
            "sha512_crypt: 1000001 rounds is outside",
        ],
        [
            "bcrypt_14",
            bcrypt.hashpw(b"x", bcrypt.gensalt(14)).decode(),
            "bcrypt: cost 14 is outside",
        ],
    ]
    versions = {
        name: importlib.metadata.version(name)
        for name in ["Werkzeug", "Django", "passlib", "bcrypt", "argon2-cffi"]
    }
    print(
        json.dumps({"versions": versions, "ok": ok, "defaults": defaults, "over_cap": over_cap})
    )


def _django_argon2(memory_cost):
    """Django's argon2 hasher with another memory cost (Django reads it from the class)."""

    class Hasher(django.Argon2PasswordHasher):
        pass

    Hasher.memory_cost = memory_cost
    h = Hasher()
    return h.encode("x", h.salt())


if __name__ == "__main__":
    main()
