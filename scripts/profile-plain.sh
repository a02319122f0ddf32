#!/bin/bash
# Cost per request of the plain request path, counted two ways:
#
#   scripts/profile-plain.sh [server-binary] [go|produto|floor] [requests] [callgrind|stat]
#
# floor: the bench's sqlx floor (bare tonic + tonic-health + a plain PgPool; the binary is
#   the bench executable, target/release/deps/load-*), the baseline of what produto adds.
#
# callgrind (the default): userspace instructions per request, counted by valgrind's
#   callgrind (deterministic: the load of a shared machine does not move it). The Go peer
#   cannot run under valgrind (the Go runtime aborts there).
# stat: the server runs natively and `perf stat -p` counts its syscalls, context switches
#   and CPU time (task-clock) per request: syscalls and switches are nearly as repeatable
#   as instructions (they do not depend on the machine's load), and work for the Go peer.
#
# Starts the server (release produto-server with PRODUTO_BATCH_NIVEL=false, or the Go peer
# built by the bench under target/peers/go) on a fresh database with one user, warms it up
# with 1 000 requests, then sends <requests> (default 5 000) ObterNivel and then as many
# Health/Check with h2load (4 connections x 8 streams) and prints the counts per request.
# callgrind's files stay in target/profile/ for callgrind_annotate. Extra PRODUTO_* variables
# in the environment reach the server (to compare settings). Needs valgrind or perf, h2load,
# psql, PostgreSQL on 127.0.0.1:5432. See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/produto-server}
KIND=${2:-produto}
N=${3:-5000}
TOOL=${4:-callgrind}
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

case $TOOL in
  callgrind) RUN=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$KIND.%p") ;;
  stat) RUN=() ;;
  *) echo "tool: callgrind or stat, not $TOOL" >&2; exit 2 ;;
esac
if [ "$KIND" = floor ]; then
  PRODUTO_BENCH_DATABASE_URL="$PGURL/$DB" "${RUN[@]}" "$BIN" --serve-floor sqlx \
    --floor-addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
elif [ "$KIND" = go ]; then
  "${RUN[@]}" "$BIN" --port "$PORT" --table usuarios --database-url "$PGURL/$DB" >/dev/null 2>&1 &
else
  DATABASE_URL="$PGURL/$DB" PRODUTO_ADDR=127.0.0.1:$PORT PRODUTO_ADMIN_ADDR= RUST_LOG=warn \
    PRODUTO_BATCH_NIVEL=false PRODUTO_SHUTDOWN_DELAY=0s "${RUN[@]}" "$BIN" >/dev/null 2>&1 &
fi
SERVER=$!
# Ready when the schema is there (produto migrates it; the Go peer and the floor need it made first).
for _ in $(seq 600); do
  if [ "$KIND" != produto ] || psql -qtA "$PGURL/$DB" -c "SELECT 1 FROM usuarios LIMIT 0" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
if [ "$KIND" != produto ]; then
  for f in migrations/postgres/*.sql; do psql -q "$PGURL/$DB" -f "$f" >/dev/null; done
fi
psql -q "$PGURL/$DB" -c "INSERT INTO usuarios (usuario, senha_hash, nivel) VALUES ('user1', 'x', 1)"
H2LOAD=(h2load -c 4 -m 8 -t 1 -H 'content-type: application/grpc' -H 'te: trailers')
load() { # path frame requests
  "${H2LOAD[@]}" -n "$3" -d "$2" "http://127.0.0.1:$PORT$1" | grep -E '^requests:'
}
# (h2load refuses fewer requests than clients: one client for this one request.)
for _ in $(seq 600); do
  if h2load -n 1 -c 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$OUT/check.grpc" \
    "http://127.0.0.1:$PORT/grpc.health.v1.Health/Check" 2>/dev/null | grep -q '1 succeeded'; then break; fi
  sleep 0.2
done
NIVEL=/produto.v1.ProdutoService/ObterNivel
CHECK=/grpc.health.v1.Health/Check
load $NIVEL "$OUT/nivel.grpc" 1000 >/dev/null
for what in nivel check; do
  path=$NIVEL; [ $what = check ] && path=$CHECK
  if [ "$TOOL" = stat ]; then
    stat=$OUT/stat.$KIND.$what
    perf stat -x, -e task-clock,raw_syscalls:sys_enter,context-switches -p "$SERVER" -o "$stat" -- \
      "${H2LOAD[@]}" -n "$N" -d "$OUT/$what.grpc" "http://127.0.0.1:$PORT$path" | grep -E '^requests:'
    awk -F, -v n="$N" -v k="$KIND" -v w="$what" '
      $3 == "task-clock" { cpu = $1 } $3 ~ /sys_enter/ { sys = $1 } $3 == "context-switches" { cs = $1 }
      END { printf "%s %s: %.1f us CPU, %.2f syscalls, %.2f context switches per request", k, w, cpu * 1000 / n, sys / n, cs / n }' "$stat"
    awk '/^VmRSS|^VmHWM/ { printf ", %s %.1f MiB", $1, $2 / 1024 } END { print "" }' "/proc/$SERVER/status"
    continue
  fi
  callgrind_control -z "$SERVER" >/dev/null
  load "$path" "$OUT/$what.grpc" "$N"
  callgrind_control -d "$what" "$SERVER" >/dev/null
  sleep 1
  file=$(ls -t "$OUT"/callgrind.$KIND.$SERVER.* | head -1)
  total=$(grep -m1 '^summary:' "$file" | awk '{print $2}')
  echo "$KIND $what: $((total / N)) instructions per request ($file)"
done
