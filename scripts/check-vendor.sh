#!/usr/bin/env bash
# Checks that vendor/sqlx-core is upstream sqlx-core 0.9.0 from crates.io plus exactly the
# patches in vendor/patches, applied in order: a change to the vendored code that is not in a
# patch file (or a patch file that no longer matches the code) fails here. See vendor/README.md.
#
# The pristine crate comes from cargo's registry cache when it is there, else from crates.io,
# and is checked against the registry's SHA-256 either way. Needs curl (or cargo), tar, patch.
set -euo pipefail
cd "$(dirname "$0")/.."

crate=sqlx-core
version=0.9.0
# The checksum crates.io's index gives for sqlx-core 0.9.0.
sha256=05b44e85bf579a8eeb4ceaa77a3a523baf2bf0e9bac7e40f405d537b5d2d5ccb

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

archive=
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate"; do
  [ -f "$cached" ] && archive=$cached && break
done
if [ -z "$archive" ]; then
  archive="$scratch/$crate-$version.crate"
  if ! curl -sSfL --retry 3 -o "$archive" \
    "https://static.crates.io/crates/$crate/$crate-$version.crate"; then
    # No curl or no direct access: let cargo fetch it into a CARGO_HOME of our own.
    echo "check-vendor: no direct download; fetching $crate $version with cargo" >&2
    mkdir -p "$scratch/fetch/src"
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
      "$crate" "$version" >"$scratch/fetch/Cargo.toml"
    : >"$scratch/fetch/src/lib.rs"
    CARGO_HOME="$scratch/home" cargo fetch -q --manifest-path "$scratch/fetch/Cargo.toml"
    archive=$(ls "$scratch"/home/registry/cache/*/"$crate-$version.crate")
  fi
fi
echo "$sha256  $archive" | sha256sum -c --quiet -

mkdir "$scratch/tree"
tar -xzf "$archive" -C "$scratch/tree"
upstream="$scratch/tree/$crate-$version"
for patch in vendor/patches/*.patch; do
  # No fuzz: a patch applies exactly where it says, or the check fails.
  if ! patch -d "$upstream" -p1 --fuzz=0 --no-backup-if-mismatch --quiet <"$patch"; then
    echo "check-vendor: $patch does not apply to upstream $crate $version" >&2
    exit 1
  fi
done

if ! diff -r "$upstream" "vendor/$crate"; then
  echo "check-vendor: vendor/$crate is not upstream $crate $version plus vendor/patches (diff above)" >&2
  exit 1
fi
echo "check-vendor: vendor/$crate = upstream $crate $version + $(ls vendor/patches/*.patch | wc -l) patches"
