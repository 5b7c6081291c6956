#!/usr/bin/env bash
# Benchmark for issue 12 (a script, not a timed test): acknowledged webhooks per second, CPU
# per acknowledged webhook and p99 for fulfilld on redb, on PostgreSQL with one replica and
# with three replicas sharing one database, and the Node peer (../shared/bench/peer-node,
# override with PEERS=dir), in rounds A B C D. Traffic: 127.0.0.1 only.
#
#   benches/replicas.sh                      # builds target/release/fulfilld and the generator
#   benches/replicas.sh --rounds 1 --secs 5  # shorter
#   benches/replicas.sh --no-build           # use the binaries already built
#   benches/replicas.sh --only "pg1 pg3"     # some of redb, pg1, pg3, peer
#
# Options: --rounds N (2), --secs S per measured phase (10).
# Needs cargo, node/npm (the peer's express + stripe are installed once into
# ~/.cache/fulfilld-compare), PostgreSQL's server binaries (initdb, pg_ctl; found under
# /usr/lib/postgresql/*/bin or on PATH, or PGBIN=dir), python3, taskset, curl.
#
# Method. Every server process (fulfilld replicas, the peer, and PostgreSQL: the postmaster,
# its backends and its background processes) is pinned to core 1 with `taskset -c 1`; the
# load generator (benches/compare/gen) to core 0. So every row gets the same one core for
# all of its server work, and "CPU per ack" for PostgreSQL rows is fulfilld's plus the
# database's. PostgreSQL runs with its defaults for durability (fsync on,
# synchronous_commit on, full_page_writes on): a 200 means the event is in the WAL on disk,
# as on redb. CPU = utime+stime from /proc/PID/stat, for PostgreSQL summed over the
# postmaster's live children plus its cutime+cstime (children that exited), read before and
# after each phase, divided by the requests acknowledged (2xx) in it. Events are
# `checkout.session.completed` of unpaid sessions (recorded, no Stripe call, no job), each a
# new event and session. With several replicas the generator spreads connections (closed
# loop) or requests (open loop) round-robin over them, as a proxy would, without a proxy's
# own CPU. Phases: a 2 s warm-up, closed loop 50 connections for S seconds (saturated), open
# loop 1,000/s and 2,000/s for S seconds (latency from each request's scheduled start).
# Every run starts on a fresh database (a new redb file, a new PostgreSQL database).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/../shared/bench}
ROUNDS=2 SECS=10 BUILD=1 ONLY="redb pg1 pg3 peer"
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --no-build) BUILD=0 ;;
    --only) ONLY=$2; shift ;;
    *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
  esac
  shift
done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 120 ] \
  || { echo "out of range: rounds 1-10, secs 1-120" >&2; exit 2; }

BIN=$ROOT/target/release/fulfilld
GEN=$ROOT/benches/compare/gen/target/release/compare-gen
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin fulfilld >&2
  (cd benches/compare/gen && cargo build --release --offline >&2)
fi
[ -x "$BIN" ] && [ -x "$GEN" ] || { echo "missing $BIN or $GEN (run without --no-build)" >&2; exit 2; }
if [ -z "${PGBIN:-}" ]; then
  PGBIN=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")")
fi
[ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ] || { echo "no PostgreSQL server binaries (set PGBIN=dir with initdb and pg_ctl)" >&2; exit 2; }

NM_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fulfilld-compare
if [ ! -d "$NM_CACHE/node_modules/express" ] || [ ! -d "$NM_CACHE/node_modules/stripe" ]; then
  mkdir -p "$NM_CACHE" && cp "$PEERS/peer-node/package.json" "$NM_CACHE/"
  (cd "$NM_CACHE" && npm install --no-audit --no-fund >&2)
fi
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
PGDATA=$WORK/pg
# PostgreSQL refuses to run as root: then it runs as the `postgres` user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$PGDATA/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/peers"
cp -r "$PEERS/peer-node" "$PEERS/peer-node-guide" "$WORK/peers/"
chmod -R u+w "$WORK/peers"
ln -s "$NM_CACHE/node_modules" "$WORK/peers/peer-node/node_modules"
node benches/compare/template.js "$PEERS/peer-node-guide/session_template.json" unpaid "$WORK/unpaid.json"

SECRET=whsec_replicas_bench_secret
TOKEN=replicas-bench-token-0123456789abcdef
TCK=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
# utime+stime of the processes, in µs.
cpu_us() { for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done | awk -v t="$TCK" '{sub(/^.*\) /,""); s+=$12+$13} END{print int(s*1000000/t)}'; }
# PostgreSQL: the postmaster's own time, its exited children's (cutime+cstime), and its live children's.
pg_cpu_us() {
  local pm=$1 kids
  kids=$(pgrep -P "$pm" | tr '\n' ' ')
  { awk '{sub(/^.*\) /,""); print $12+$13+$14+$15}' "/proc/$pm/stat"
    for k in $kids; do awk '{sub(/^.*\) /,""); print $12+$13}' "/proc/$k/stat" 2>/dev/null || true; done
  } | awk -v t="$TCK" '{s+=$1} END{print int(s*1000000/t)}'
}
hwm_mb() { for p in "$@"; do awk '/^VmHWM:/{print $2}' "/proc/$p/status"; done | awk '{s+=$1} END{printf "%.1f", s/1024}'; }
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k{print $2}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.0f}" 'BEGIN{if(b>0) printf f, a/b; else print "n/a"}'; }
stop() { # pid: SIGTERM, then at most 20 s before SIGKILL
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1000); do kill -0 "$1" 2>/dev/null || break; sleep 0.02; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# One PostgreSQL cluster for the whole run, on core 1; a new database per run.
PGPORT=$(free_port)
mkdir -p "$PGDATA" && { [ "$(id -u)" != 0 ] || chown postgres "$PGDATA" "$WORK"; }
as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U fulfilld >/dev/null
as_pg taskset -c 1 "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
PGPM=$(head -1 "$PGDATA/postmaster.pid")
PGVER=$("$PGBIN/postgres" --version)
PSQL=$PGBIN/psql; [ -x "$PSQL" ] || PSQL=$(command -v psql)
psql_c() { as_pg "$PSQL" -X -q -h 127.0.0.1 -p "$PGPORT" -U fulfilld -d postgres -c "$1" >/dev/null; }

# start_fulfilld STORAGE_ENV... -> appends to RPIDS and URLS
start_fulfilld() {
  local port; port=$(free_port)
  env -i PATH="$PATH" RUST_LOG=warn \
    FULFILLD_SERVER__LISTEN="127.0.0.1:$port" "$@" \
    FULFILLD_STRIPE__SECRET_KEY=sk_test_replicas FULFILLD_STRIPE__WEBHOOK_SECRETS="$SECRET" \
    FULFILLD_STRIPE__API_BASE=http://127.0.0.1:9 FULFILLD_ADMIN__USERNAME=admin \
    FULFILLD_ADMIN__PASSWORD='bench password 2026' FULFILLD_ADMIN__API_TOKEN="$TOKEN" \
    taskset -c 1 "$BIN" serve >/dev/null 2>>"$WORK/fulfilld.log" &
  local pid=$!; PIDS+=("$pid"); RPIDS+=("$pid"); URLS+=("http://127.0.0.1:$port/webhook")
  taskset -c 0 "$GEN" healthz "$port" "$(now_ns)" >/dev/null || { echo "fulfilld on $port did not start; see below" >&2; tail -20 "$WORK/fulfilld.log" >&2; exit 1; }
}

R="$WORK/results"   # lines: name key value
rec() { echo "$1 $2 $3" >>"$R"; }

run() { # name: redb | pg1 | pg3 | peer
  local name=$1 db="" c0 p0 c1 p1 out start=10000000
  RPIDS=() URLS=()
  case $name in
    redb) db="$WORK/redb-$RANDOM"; mkdir -p "$db"
      start_fulfilld FULFILLD_STORAGE__PATH="$db/f.redb" ;;
    pg*) db=bench_$RANDOM$RANDOM; psql_c "CREATE DATABASE $db"
      for _ in $(seq "${name#pg}"); do
        start_fulfilld FULFILLD_STORAGE__URL="postgres://fulfilld@127.0.0.1:$PGPORT/$db"
      done ;;
    peer) local port; port=$(free_port)
      PORT=$port WEBHOOK_SECRET=$SECRET taskset -c 1 node "$WORK/peers/peer-node/server.js" >/dev/null 2>>"$WORK/node.log" &
      RPIDS+=("$!"); PIDS+=("$!"); URLS+=("http://127.0.0.1:$port/webhook")
      taskset -c 0 "$GEN" healthz "$port" "$(now_ns)" >/dev/null ;;
  esac
  local urls; urls=$(IFS=,; echo "${URLS[*]}")
  taskset -c 0 "$GEN" "$urls" "$WORK/unpaid.json" "$SECRET" closed 50 2 1000000 0 >/dev/null
  for phase in sat o1000 o2000; do
    c0=$(cpu_us "${RPIDS[@]}"); p0=$(pg_cpu_us "$PGPM")
    case $phase in
      sat) out=$(taskset -c 0 "$GEN" "$urls" "$WORK/unpaid.json" "$SECRET" closed 50 "$SECS" 10000000 "$start") ;;
      o*) out=$(taskset -c 0 "$GEN" "$urls" "$WORK/unpaid.json" "$SECRET" open "${phase#o}" "$SECS" "$start") ;;
    esac
    start=$((start + 10000000))
    c1=$(cpu_us "${RPIDS[@]}"); p1=$(pg_cpu_us "$PGPM")
    local ok; ok=$(kv "$out" ok)
    echo "  $name $phase: $out cpu_us=$((c1 - c0)) pg_cpu_us=$((p1 - p0))" >&2
    rec "$name" "${phase}_rps" "$(kv "$out" rps)"
    rec "$name" "${phase}_p99" "$(kv "$out" p99)"
    rec "$name" "${phase}_err" "$(kv "$out" errors)"
    rec "$name" "${phase}_cpu" "$(div $((c1 - c0)) "$ok" %.1f)"
    if [ "${name#pg}" != "$name" ]; then
      rec "$name" "${phase}_pgcpu" "$(div $((p1 - p0)) "$ok" %.1f)"
      rec "$name" "${phase}_allcpu" "$(div $((c1 - c0 + p1 - p0)) "$ok" %.1f)"
    fi
  done
  rec "$name" hwm "$(hwm_mb "${RPIDS[@]}")"
  for p in "${RPIDS[@]}"; do stop "$p"; done
  case $name in
    redb) rm -rf "$db" ;;
    pg*) psql_c "DROP DATABASE $db" ;;
  esac
}

echo "fulfilld replicas bench: $(date -u '+%F %T UTC'), $(nproc) cores, $PGVER, load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  for name in $ONLY; do run "$name"; done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

vals() { awk -v n="$1" -v k="$2" '$1==n&&$2==k{print $3}' "$R" | sort -g | awk 'NR==1{a=$1} {b=$1; c++} END{if(!c) print "—"; else if(a==b) print a; else print a "–" b}'; }
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
pgcell() { echo "$(vals "$1" "${2}_allcpu") ($(vals "$1" "${2}_cpu") + $(vals "$1" "${2}_pgcpu"))"; }

echo
echo "machine: $(nproc) cores; load average $LOAD0 at start, $LOAD1 at end; $PGVER"
echo "fulfilld $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+local changes)'); $ROUNDS rounds, $SECS s per phase; ranges over rounds; every server process on core 1, the generator on core 0"
echo
row "measure" "redb" "PostgreSQL, 1 replica" "PostgreSQL, 3 replicas" "peer-node"
row "---" "---" "---" "---" "---"
row "acknowledged/s, saturated (50 conns)" "$(vals redb sat_rps)" "$(vals pg1 sat_rps)" "$(vals pg3 sat_rps)" "$(vals peer sat_rps)"
row "CPU per ack, saturated, µs (fulfilld + PostgreSQL)" "$(vals redb sat_cpu)" "$(pgcell pg1 sat)" "$(pgcell pg3 sat)" "$(vals peer sat_cpu)"
row "p99 saturated, ms" "$(vals redb sat_p99)" "$(vals pg1 sat_p99)" "$(vals pg3 sat_p99)" "$(vals peer sat_p99)"
row "CPU per ack, open loop 1,000/s, µs" "$(vals redb o1000_cpu)" "$(pgcell pg1 o1000)" "$(pgcell pg3 o1000)" "$(vals peer o1000_cpu)"
row "p99 open loop 1,000/s, ms" "$(vals redb o1000_p99)" "$(vals pg1 o1000_p99)" "$(vals pg3 o1000_p99)" "$(vals peer o1000_p99)"
row "CPU per ack, open loop 2,000/s, µs" "$(vals redb o2000_cpu)" "$(pgcell pg1 o2000)" "$(pgcell pg3 o2000)" "$(vals peer o2000_cpu)"
row "p99 open loop 2,000/s, ms" "$(vals redb o2000_p99)" "$(vals pg1 o2000_p99)" "$(vals pg3 o2000_p99)" "$(vals peer o2000_p99)"
row "errors (saturated / 1,000/s / 2,000/s)" "$(vals redb sat_err) / $(vals redb o1000_err) / $(vals redb o2000_err)" "$(vals pg1 sat_err) / $(vals pg1 o1000_err) / $(vals pg1 o2000_err)" "$(vals pg3 sat_err) / $(vals pg3 o1000_err) / $(vals pg3 o2000_err)" "$(vals peer sat_err) / $(vals peer o1000_err) / $(vals peer o2000_err)"
row "peak RSS, all replicas together, MB (PostgreSQL not counted)" "$(vals redb hwm)" "$(vals pg1 hwm)" "$(vals pg3 hwm)" "$(vals peer hwm)"
