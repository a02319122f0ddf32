#!/bin/bash
# Instructions per request of the plain request path, counted by callgrind (deterministic:
# the load of a shared machine does not move it), and a cpu-clock profile by perf.
#
#   scripts/profile-plain.sh [server-binary] [go|produto] [requests]
#
# Starts the server (release produto-server with PRODUTO_BATCH_NIVEL=false, or the Go peer
# built by the bench under target/peers/go) under valgrind on a fresh database with one user,
# warms it up with 1 000 requests, zeroes the counters (callgrind_control -z), sends <requests> (default 5 000)
# ObterNivel and then as many Health/Check with h2load (4 connections x 8 streams), dumping
# the counters after each; prints instructions per request and leaves the callgrind files in
# target/profile/ for callgrind_annotate. Needs valgrind, h2load, psql, PostgreSQL on
# 127.0.0.1:5432. See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/produto-server}
KIND=${2:-produto}
N=${3:-5000}
OUT=target/profile
mkdir -p "$OUT"
DB=produto_profile_$$
PGURL=postgres://postgres@127.0.0.1:5432
PORT=$((40000 + RANDOM % 20000))
psql -q "$PGURL/postgres" -c "CREATE DATABASE $DB"
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true; psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT

frame() { printf "$1" >"$2"; }
frame '\x00\x00\x00\x00\x07\x0a\x05user1' "$OUT/nivel.grpc"
frame '\x00\x00\x00\x00\x00' "$OUT/check.grpc"

VG=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$KIND.%p")
if [ "$KIND" = go ]; then
  "${VG[@]}" "$BIN" --port "$PORT" --table usuarios --database-url "$PGURL/$DB" >/dev/null 2>&1 &
else
  DATABASE_URL="$PGURL/$DB" PRODUTO_ADDR=127.0.0.1:$PORT PRODUTO_ADMIN_ADDR= RUST_LOG=warn \
    PRODUTO_BATCH_NIVEL=false PRODUTO_SHUTDOWN_DELAY=0s "${VG[@]}" "$BIN" >/dev/null 2>&1 &
fi
SERVER=$!
# Ready when the schema is there (produto migrates it; the Go peer needs it made first).
for _ in $(seq 600); do
  if [ "$KIND" = go ] || psql -qtA "$PGURL/$DB" -c "SELECT 1 FROM usuarios LIMIT 0" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
if [ "$KIND" = go ]; then
  for f in migrations/postgres/*.sql; do psql -q "$PGURL/$DB" -f "$f" >/dev/null; done
fi
psql -q "$PGURL/$DB" -c "INSERT INTO usuarios (usuario, senha_hash, nivel) VALUES ('user1', 'x', 1)"
load() { # path frame requests
  h2load -n "$3" -c 4 -m 8 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$2" "http://127.0.0.1:$PORT$1" | grep -E '^requests:'
}
for _ in $(seq 600); do
  if load /grpc.health.v1.Health/Check "$OUT/check.grpc" 1 2>/dev/null | grep -q '1 succeeded'; then break; fi
  sleep 0.2
done
NIVEL=/produto.v1.ProdutoService/ObterNivel
CHECK=/grpc.health.v1.Health/Check
load $NIVEL "$OUT/nivel.grpc" 1000 >/dev/null
for what in nivel check; do
  path=$NIVEL; [ $what = check ] && path=$CHECK
  callgrind_control -z "$SERVER" >/dev/null
  load "$path" "$OUT/$what.grpc" "$N"
  callgrind_control -d "$what" "$SERVER" >/dev/null
  sleep 1
  file=$(ls -t "$OUT"/callgrind.$KIND.$SERVER.* | head -1)
  total=$(grep -m1 '^summary:' "$file" | awk '{print $2}')
  echo "$KIND $what: $((total / N)) instructions per request ($file)"
done
