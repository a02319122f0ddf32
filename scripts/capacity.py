#!/usr/bin/env python3
"""Capacity model for produto, recomputed from one bench run's JSON.

    python3 scripts/capacity.py [target/produto-bench.json] [--utilisation 0.6] [--pod-cores 2]

Reads from the run (benches/load, `cargo bench --bench load`):
  * the server's CPU per ObterNivel, plain and batched (scenario 7, h2load, the most streams),
  * PostgreSQL's CPU per ObterNivel on those rows (every postgres process: an upper bound),
  * argon2's verify rate per core (scenario 4, raw) and VerificarLogin's server CPU per call,
  * pgbench's best SELECT rate (what two cores of PostgreSQL answer with no gRPC in front).
and prints, for 1k, 10k, 100k and 1M lookups/s and logins/s, how many produto instances and
cores, PostgreSQL cores (primary + read replicas) and server-side connections (through
PgBouncer) that takes, and the first thing to run out. docs/benchmarks.md ("Capacity") has
its last output.
Everything not in the JSON is a flag, so the assumptions are on the command line.
"""

import argparse
import json
import math
import sys


def rows(doc, scenario, variant=None, load=None):
    return [
        r
        for r in doc["rows"]
        if r["scenario"] == scenario
        and (variant is None or r["variant"] == variant)
        and (load is None or r["load"] == load)
    ]


def pick(doc, scenario, variant, field):
    """The value of `field` on the row of `scenario`/`variant` with the most callers,
    preferring h2load rows (the outside load generator) to the bench's own."""
    for load in ("h2load", "rust"):
        found = [r for r in rows(doc, scenario, variant, load) if r.get(field) is not None]
        if found:
            return max(found, key=lambda r: r["callers"])[field]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="?", default="target/produto-bench.json")
    ap.add_argument("--utilisation", type=float, default=0.6, help="CPU share planned per core (headroom for peaks)")
    ap.add_argument("--pod-cores", type=int, default=2, help="cores per produto instance")
    ap.add_argument("--db-cores", type=int, default=16, help="cores per PostgreSQL server (primary or replica)")
    ap.add_argument("--query-ms", type=float, default=0.5, help="time a statement holds a server connection (round trip + execution)")
    ap.add_argument("--login-statements", type=int, default=4, help="statements per login (two throttle claims, credentials, one resolution)")
    ap.add_argument("--login-writes", type=int, default=3, help="of those, writes (on the primary; since issue 23 the credential read runs there too while it is up)")
    ap.add_argument("--pool", type=int, default=20, help="PRODUTO_MAX_CONNECTIONS per instance")
    ap.add_argument("--max-db-connections", type=int, default=500, help="server connections one PostgreSQL should hold")
    args = ap.parse_args()

    try:
        doc = json.load(open(args.json))
    except OSError as e:
        sys.exit(f"capacity.py: {e} (run `cargo bench --bench load` first)")

    plain = pick(doc, "7 ObterNivel", "plain", "server_cpu_us_per_request")
    batched = pick(doc, "7 ObterNivel", "batched", "server_cpu_us_per_request")
    db_plain = pick(doc, "7 ObterNivel", "plain", "postgres_cpu_us_per_request")
    db_batched = pick(doc, "7 ObterNivel", "batched", "postgres_cpu_us_per_request")
    go = pick(doc, "7 ObterNivel", "go", "server_cpu_us_per_request")
    raw = rows(doc, "4 argon2 verify, raw")
    login = pick(doc, "4 VerificarLogin gRPC", "plain", "server_cpu_us_per_request")
    pgbench = [r["rps"] for r in doc["rows"] if r["load"] == "pgbench"]
    cores = 2
    for k, v in doc.get("notes", {}).items():
        if k == "machine" and "cores" in v:
            cores = int(v.rsplit(",", 1)[1].split()[0])
    if plain is None or batched is None:
        sys.exit("capacity.py: no scenario 7 ObterNivel rows in the JSON (run with --scenarios 7)")
    if db_plain is None:
        # No PostgreSQL measure in the row: all of the machine's cores during pgbench's best run.
        db_plain = cores * 1e6 / max(pgbench) if pgbench else 50.0
    if db_batched is None:
        db_batched = db_plain / 2
    # argon2 per verification on one core; the login's own server CPU covers it when measured.
    argon_us = cores * 1e6 / raw[0]["rps"] if raw else 27000.0
    login_us = login if login is not None else argon_us * 1.05

    print(f"from {args.json}: server CPU per lookup {plain:.1f} µs plain, {batched:.1f} µs batched"
          + (f" (Go peer {go:.1f} µs)" if go else "")
          + f"; PostgreSQL CPU per lookup {db_plain:.1f} µs plain, {db_batched:.1f} µs batched;"
          f" login {login_us:.0f} µs of server CPU (argon2 {argon_us:.0f} µs)")
    print(f"assumptions: {args.utilisation:.0%} planned utilisation, {args.pod_cores}-core instances,"
          f" {args.db_cores}-core PostgreSQL servers, {args.query_ms} ms per statement on a connection,"
          f" {args.login_statements} statements per login ({args.login_writes} writes), pool {args.pool}\n")

    usable = args.utilisation
    print("| load | rate/s | instances | server cores | PostgreSQL cores (primary + replicas) | server connections (PgBouncer) | client connections | first bottleneck |")
    print("|---|---:|---:|---:|---|---:|---:|---|")
    for kind in ("lookups (batched)", "lookups (plain)", "logins"):
        for rate in (1_000, 10_000, 100_000, 1_000_000):
            if kind == "logins":
                server_us = login_us
                reads = rate * (args.login_statements - args.login_writes)
                writes = rate * args.login_writes
                db_us_read, db_us_write = db_plain, db_plain * 2  # a write: WAL, index, fsync share
            else:
                server_us = batched if "batched" in kind else plain
                reads, writes = rate, 0
                db_us_read = db_batched if "batched" in kind else db_plain
                db_us_write = 0
            server_cores = rate * server_us / 1e6 / usable
            instances = max(2, math.ceil(server_cores / args.pod_cores))  # two for availability
            read_cores = reads * db_us_read / 1e6 / usable
            write_cores = writes * db_us_write / 1e6 / usable
            primary = max(1, math.ceil(write_cores)) if writes else 0
            # Reads go to replicas once one server is not enough; the primary keeps its share.
            db_servers_read = math.ceil(read_cores / args.db_cores)
            statements = reads + writes
            if "batched" in kind:
                statements = reads / 10 + writes  # ~10 lookups per query at high concurrency
            connections = math.ceil(statements * args.query_ms / 1000 / usable)
            client_conns = instances * args.pool
            if writes and write_cores > args.db_cores:
                bottleneck = (f"primary writes: {write_cores:.0f} cores of writes > one {args.db_cores}-core primary:"
                              " throttling state must move off PostgreSQL (sharded, or an in-memory store)")
            elif db_servers_read > 1:
                bottleneck = f"PostgreSQL reads: {db_servers_read} servers of {args.db_cores} cores (replicas)"
            elif client_conns > args.max_db_connections:
                bottleneck = f"connections: {client_conns} pool connections > {args.max_db_connections}: PgBouncer"
            elif "logins" == kind:
                bottleneck = "argon2 CPU on the instances"
            else:
                bottleneck = "server CPU (h2 + sqlx per lookup)"
            db_desc = (f"{primary} + " if writes else "") + f"{read_cores:.1f} of reads"
            print(f"| {kind} | {rate:,} | {instances} | {server_cores:.1f} | {db_desc} |"
                  f" {connections} | {client_conns} | {bottleneck} |")


if __name__ == "__main__":
    main()
