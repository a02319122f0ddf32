"""Password hashes as the old Python bots stored them, made by the real libraries.

Prints one JSON object: `versions` (each library's version), `ok` ({format label: [hash,
password]}, each made with its library's defaults, which produto must accept and verify), and
`over_cap` ({name: [hash, the words produto's refusal must hold]}, made by the same libraries
with costs above produto's caps). The labels are produto's (`password::legacy::Format::label`).
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
    made = {
        # Werkzeug 3: scrypt by default; pbkdf2 as Werkzeug 2 made it, and with other digests.
        "werkzeug_scrypt": lambda p: generate_password_hash(p),
        "werkzeug_pbkdf2_sha256": lambda p: generate_password_hash(p, "pbkdf2"),
        "werkzeug_pbkdf2_sha1": lambda p: generate_password_hash(p, "pbkdf2:sha1"),
        "werkzeug_pbkdf2_sha512": lambda p: generate_password_hash(p, "pbkdf2:sha512"),
        "django_pbkdf2_sha256": lambda p: django.make_password(p, hasher="pbkdf2_sha256"),
        "django_pbkdf2_sha1": lambda p: django.make_password(p, hasher="pbkdf2_sha1"),
        "django_argon2": lambda p: django.make_password(p, hasher="argon2"),
        "django_bcrypt_sha256": lambda p: django.make_password(p, hasher="bcrypt_sha256"),
        "django_bcrypt": lambda p: django.make_password(p, hasher="bcrypt"),
        "django_scrypt": lambda p: django.make_password(p, hasher="scrypt"),
        "passlib_pbkdf2_sha1": passlib.pbkdf2_sha1.hash,
        "passlib_pbkdf2_sha256": passlib.pbkdf2_sha256.hash,
        "passlib_pbkdf2_sha512": passlib.pbkdf2_sha512.hash,
        "passlib_scrypt": passlib.scrypt.hash,
        "sha256_crypt": passlib.sha256_crypt.hash,
        "sha512_crypt": passlib.sha512_crypt.hash,
        "bcrypt": passlib.bcrypt.hash,
        # argon2 PHC strings as passlib (over argon2-cffi) stores them: produto's own format.
        "argon2": passlib.argon2.hash,
    }
    ok = {label: [make(password(label)), password(label)] for label, make in made.items()}
    # Plain bcrypt from Python's bcrypt itself, beside passlib's.
    ok["bcrypt_python"] = [
        bcrypt.hashpw(password("bcrypt_python").encode(), bcrypt.gensalt()).decode(),
        password("bcrypt_python"),
    ]

    over_cap = {
        # 128 MiB of scrypt memory: over the 100 MiB cap.
        "werkzeug_scrypt_128_mib": [
            generate_password_hash("x", "scrypt:131072:8:1"),
            "werkzeug_scrypt: n=131072, r=8, p=1 needs 128 MiB of memory",
        ],
        "passlib_scrypt_128_mib": [
            passlib.scrypt.using(rounds=17).hash("x"),
            "passlib_scrypt: n=131072, r=8, p=1 needs 128 MiB of memory",
        ],
        "django_argon2_200_mib": [
            _django_argon2(204800),
            "django_argon2: m=204800 KiB, t=2, p=8 needs 200 MiB of memory",
        ],
        "django_pbkdf2_sha256_2000001": [
            django.PBKDF2PasswordHasher().encode("x", "s4ltS4ltS4lt", iterations=2_000_001),
            "django_pbkdf2_sha256: 2000001 iterations is outside",
        ],
        "sha512_crypt_1000001": [
            passlib.sha512_crypt.using(rounds=1_000_001).hash("x"),
            "sha512_crypt: 1000001 rounds is outside",
        ],
        "bcrypt_14": [
            bcrypt.hashpw(b"x", bcrypt.gensalt(14)).decode(),
            "bcrypt: cost 14 is outside",
        ],
    }
    versions = {
        name: importlib.metadata.version(name)
        for name in ["Werkzeug", "Django", "passlib", "bcrypt", "argon2-cffi"]
    }
    print(json.dumps({"versions": versions, "ok": ok, "over_cap": over_cap}))


def _django_argon2(memory_cost):
    """Django's argon2 hasher with another memory cost (Django reads it from the class)."""

    class Hasher(django.Argon2PasswordHasher):
        pass

    Hasher.memory_cost = memory_cost
    h = Hasher()
    return h.encode("x", h.salt())


if __name__ == "__main__":
    main()
