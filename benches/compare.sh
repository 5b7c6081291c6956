#!/usr/bin/env bash
# Side-by-side benchmark for issue 11 (a script, not a timed test): fulfilld against the two
# Node peers in ../shared/bench (override with PEERS=dir), A B A B, each server pinned with
# `taskset -c 1`, the load generator (benches/compare/gen), the fake Stripe and the callback
# receiver with `taskset -c 0`. Prints every row of issue 11's target table as
# fulfilld / peer / ratio, with the machine's load at the top. Traffic: 127.0.0.1 only.
#
#   benches/compare.sh                      # builds target/release/fulfilld and the generator
#   benches/compare.sh --rounds 1 --secs 5  # shorter
#   benches/compare.sh --no-startup         # skip the 100k-session startup row (fills 100k, ~1 min)
#   benches/compare.sh --dashboard          # also run `cargo bench --bench dashboard`
#   benches/compare.sh --no-build           # use the binaries already built
#
# Options: --rounds N (2), --secs S per measured phase (10), --orders N per order run (4000),
# --sessions N for the startup row (100000).
# Needs cargo, node/npm (the peers' express + stripe are installed once into
# ~/.cache/fulfilld-compare), python3, taskset, curl.
#
# Method. CPU = utime+stime of the server process (all threads) from /proc/PID/stat, in clock
# ticks (getconf CLK_TCK) converted to µs, read before and after each phase, divided by the
# requests it acknowledged (2xx) in that phase. Ack rows use `checkout.session.completed`
# events of *unpaid* sessions (fulfilld records them, calls no one; the peer adds the id to
# a Set). Order rows use *paid* sessions: fulfilld retrieves each from the peers' fake Stripe
# (stripe.api_base) and records the fulfillment, counted done when `/metrics` shows every
# session `fulfilled` (polled every 200 ms; that polling is inside the CPU figure); the guide
# peer retrieves inline before answering. Bytes written: /proc/PID/io `wchar` (bytes passed to
# write/pwrite) and `write_bytes` (bytes dirtied for the block layer) per acknowledged
# webhook: write_bytes is the disk figure; wchar counts every write(2), sockets included (the
# peer's 145 B are its HTTP responses). Open loop: latency from each request's scheduled start, at most 512 connections
# (a request finding all busy waits, and that wait counts); "sustained" = every request 2xx
# and the last answered within 1 s after the schedule ends. fulfilld runs with RUST_LOG=warn, stderr to a file (so logs are ~0 of wchar).
# Every server starts on a fresh database; peak RSS is VmHWM at the end of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/../shared/bench}
ROUNDS=2 SECS=10 ORDERS=4000 SESSIONS=100000 STARTUP=1 DASHBOARD=0 BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --orders) ORDERS=$2; shift ;;
    --sessions) SESSIONS=$2; shift ;;
    --no-startup) STARTUP=0 ;;
    --dashboard) DASHBOARD=1 ;;
    --no-build) BUILD=0 ;;
    *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
  esac
  shift
done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 120 ] \
  && [ "$ORDERS" -ge 1 ] && [ "$ORDERS" -le 100000 ] && [ "$SESSIONS" -le 1000000 ] \
  || { echo "out of range: rounds 1-10, secs 1-120, orders 1-100000, sessions <= 1000000" >&2; exit 2; }

BIN=$ROOT/target/release/fulfilld
GEN=$ROOT/benches/compare/gen/target/release/compare-gen
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin fulfilld >&2
  (cd benches/compare/gen && cargo build --release --offline >&2)
fi
[ -x "$BIN" ] && [ -x "$GEN" ] || { echo "missing $BIN or $GEN (run without --no-build)" >&2; exit 2; }

# The peers, copied (they are read-only) next to node_modules installed once.
NM_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fulfilld-compare
if [ ! -d "$NM_CACHE/node_modules/express" ] || [ ! -d "$NM_CACHE/node_modules/stripe" ]; then
  mkdir -p "$NM_CACHE" && cp "$PEERS/peer-node/package.json" "$NM_CACHE/"
  (cd "$NM_CACHE" && npm install --no-audit --no-fund >&2)
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/peers"
cp -r "$PEERS/peer-node" "$PEERS/peer-node-guide" "$WORK/peers/"
chmod -R u+w "$WORK/peers"
ln -s "$NM_CACHE/node_modules" "$WORK/peers/peer-node/node_modules"
node benches/compare/template.js "$PEERS/peer-node-guide/session_template.json" unpaid "$WORK/unpaid.json"
node benches/compare/template.js "$PEERS/peer-node-guide/session_template.json" paid "$WORK/paid.json"

SECRET=whsec_compare_bench_secret
# The size of every event body sent (each placeholder is replaced by as many
# digits), stored once each as received: what "excluding raw bodies" subtracts.
RAW_BYTES=$(wc -c <"$WORK/unpaid.json")
TOKEN=compare-bench-token-0123456789abcdef
TCK=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
cpu_us() { awk -v t="$TCK" '{sub(/^.*\) /,""); print int(($12+$13)*1000000/t)}' "/proc/$1/stat"; }
io_field() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
hwm_mb() { awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k{print $2}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.0f}" 'BEGIN{if(b>0) printf f, a/b; else print "n/a"}'; }

# Waits for the first 200 /healthz, prints ms since $2 (ns).
ready_ms() { taskset -c 0 "$GEN" healthz "$1" "$2"; }
STOP_MS=0 STOP_KILLED=no
stop() { # pid: SIGTERM, then at most 20 s before SIGKILL; sets STOP_MS STOP_KILLED
  local t0; t0=$(now_ns); STOP_KILLED=no
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1000); do kill -0 "$1" 2>/dev/null || break; sleep 0.02; done
  if kill -0 "$1" 2>/dev/null; then STOP_KILLED=yes; kill -KILL "$1" 2>/dev/null || true; fi
  wait "$1" 2>/dev/null || true
  STOP_MS=$(( ($(now_ns) - t0) / 1000000 ))
}
# redb's header "god byte" (offset 9) has bit 2 = RECOVERY_REQUIRED: the next open repairs.
needs_repair() { local g; g=$(od -An -tu1 -j9 -N1 "$1" | tr -d ' '); [ $(( g & 2 )) -ne 0 ] && echo "yes(god_byte=$g)" || echo "no(god_byte=$g)"; }

# start_fulfilld DBDIR [API_BASE [CALLBACK_URL]] -> sets PID PORT READY
start_fulfilld() {
  PORT=$(free_port)
  local t0; t0=$(now_ns)
  env -i PATH="$PATH" RUST_LOG="${LOG_LEVEL:-warn}" \
    FULFILLD_SERVER__LISTEN="127.0.0.1:$PORT" FULFILLD_STORAGE__PATH="$1/f.redb" \
    FULFILLD_STRIPE__SECRET_KEY=sk_test_compare FULFILLD_STRIPE__WEBHOOK_SECRETS="$SECRET" \
    FULFILLD_STRIPE__API_BASE="${2:-http://127.0.0.1:9}" FULFILLD_ADMIN__USERNAME=admin \
    FULFILLD_ADMIN__PASSWORD='bench password 2026' FULFILLD_ADMIN__API_TOKEN="$TOKEN" \
    ${3:+FULFILLD_FULFILLMENT__CALLBACK_URL="$3"} \
    ${3:+FULFILLD_FULFILLMENT__CALLBACK_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"} \
    taskset -c 1 "$BIN" serve >/dev/null 2>>"$WORK/fulfilld.log" &
  PID=$!; PIDS+=("$PID")
  READY=$(ready_ms "$PORT" "$t0")
}
# start_node SCRIPT [STRIPE_PORT] -> sets PID PORT READY
start_node() {
  PORT=$(free_port)
  local t0; t0=$(now_ns)
  PORT=$PORT STRIPE_PORT=${2:-5390} WEBHOOK_SECRET=$SECRET taskset -c 1 node "$1" >/dev/null 2>>"$WORK/node.log" &
  PID=$!; PIDS+=("$PID")
  READY=$(ready_ms "$PORT" "$t0")
}
# start_helper SCRIPT -> sets HPID HPORT (fake Stripe or callback receiver, on core 0)
start_helper() {
  HPORT=$(free_port)
  PORT=$HPORT taskset -c 0 node "$1" >/dev/null 2>>"$WORK/node.log" &
  HPID=$!; PIDS+=("$HPID")
  for _ in $(seq 100); do curl -s "http://127.0.0.1:$HPORT/stats" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "helper $1 did not start" >&2; exit 1
}
gen() { taskset -c 0 "$GEN" "http://127.0.0.1:$PORT/webhook" "$@"; }
fulfilled_count() {
  curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" | awk '/^fulfilld_sessions\{state="fulfilled"\}/{print $2; f=1} END{if(!f) print 0}'
}

R="$WORK/results"   # lines: name key value
rec() { echo "$1 $2 $3" >>"$R"; }

# The ack path: warm-up, saturated, open loop 1,000 / 2,000 / 5,000 per second.
ack_run() { # name (fulfilld|peer)
  local name=$1 db="$WORK/db-$1-$RANDOM" total=0 c0 c1 w0 b0 out
  mkdir -p "$db"
  if [ "$name" = fulfilld ]; then start_fulfilld "$db"; else start_node "$WORK/peers/peer-node/server.js"; fi
  rec "$name" ready_ms "$READY"
  out=$(gen "$WORK/unpaid.json" "$SECRET" closed 50 2 1000000 0); total=$((total + $(kv "$out" ok)))
  local start=10000000
  for phase in sat o1000 o2000 o5000; do
    c0=$(cpu_us "$PID"); w0=$(io_field "$PID" wchar); b0=$(io_field "$PID" write_bytes)
    case $phase in
      sat) out=$(gen "$WORK/unpaid.json" "$SECRET" closed 50 "$SECS" 10000000 "$start") ;;
      o*) out=$(gen "$WORK/unpaid.json" "$SECRET" open "${phase#o}" "$SECS" "$start") ;;
    esac
    start=$((start + 10000000))
    c1=$(cpu_us "$PID")
    local ok; ok=$(kv "$out" ok); total=$((total + ok))
    echo "  $name $phase: $out cpu_us=$((c1 - c0))" >&2
    rec "$name" "${phase}_cpu" "$(div $((c1 - c0)) "$ok" %.1f)"
    rec "$name" "${phase}_rps" "$(kv "$out" rps)"
    rec "$name" "${phase}_p99" "$(kv "$out" p99)"
    rec "$name" "${phase}_p999" "$(kv "$out" p999)"
    rec "$name" "${phase}_err" "$(kv "$out" errors)"
    rec "$name" "${phase}_secs" "$(kv "$out" secs)"
    rec "$name" "${phase}_hwm" "$(hwm_mb "$PID")"
    rec "$name" "${phase}_wchar" "$(div $(( $(io_field "$PID" wchar) - w0 )) "$ok" %.0f)"
    rec "$name" "${phase}_wbytes" "$(div $(( $(io_field "$PID" write_bytes) - b0 )) "$ok" %.0f)"
    if [ "$phase" = o5000 ]; then
      awk -v ok="$ok" -v e="$(kv "$out" errors)" -v s="$(kv "$out" secs)" -v r=5000 -v d="$SECS" \
        'BEGIN{print (e==0 && ok>=r*d && s<=d+1) ? "yes" : "no"}' | { read -r y; rec "$name" o5000_sustained "$y"; }
    fi
  done
  rec "$name" ack_hwm "$(hwm_mb "$PID")"
  stop "$PID"
  if [ "$name" = fulfilld ]; then
    rec fulfilld ack_sessions "$total"
    rec fulfilld ack_db_per_session "$(div "$(stat -c %s "$db/f.redb")" "$total" %.0f)"
    rec fulfilld ack_db_excl_raw "$(div $(( $(stat -c %s "$db/f.redb") - total * RAW_BYTES )) "$total" %.0f)"
  fi
  rm -rf "$db"
}

# Per fulfilled order: $ORDERS paid sessions, closed loop 50 connections, CPU until all done.
order_run() { # name (fulfilld|fulfilld_cb|guide)
  local name=$1 db="$WORK/db-$1-$RANDOM" c0 c1 w0 b0 out nd=0 t0 cb_pid= cb_port=
  mkdir -p "$db"
  start_helper "$WORK/peers/peer-node-guide/fake-stripe.js"; local sp=$HPID sport=$HPORT
  case $name in
    fulfilld) start_fulfilld "$db" "http://127.0.0.1:$sport" ;;
    fulfilld_cb)
      start_helper "$ROOT/benches/compare/receiver.js"; cb_pid=$HPID; cb_port=$HPORT
      start_fulfilld "$db" "http://127.0.0.1:$sport" "http://127.0.0.1:$cb_port/hook" ;;
    guide) start_node "$WORK/peers/peer-node-guide/server.js" "$sport" ;;
  esac
  c0=$(cpu_us "$PID"); w0=$(io_field "$PID" wchar); b0=$(io_field "$PID" write_bytes); t0=$(now_ns)
  out=$(gen "$WORK/paid.json" "$SECRET" closed 50 120 "$ORDERS" 0)
  if [ "$name" = guide ]; then
    nd=$(curl -s "http://127.0.0.1:$sport/stats")
  else
    for _ in $(seq 900); do # at most 180 s
      nd=$(fulfilled_count); [ "$nd" -ge "$ORDERS" ] && break; sleep 0.2
    done
    if [ -n "$cb_port" ]; then # and every callback delivered (at most 60 s more)
      for _ in $(seq 300); do [ "$(curl -s "http://127.0.0.1:$cb_port/stats")" -ge "$ORDERS" ] && break; sleep 0.2; done
      rec "$name" callbacks "$(curl -s "http://127.0.0.1:$cb_port/stats")"
    fi
  fi
  c1=$(cpu_us "$PID")
  local secs; secs=$(awk -v a="$t0" -v b="$(now_ns)" 'BEGIN{printf "%.2f", (b-a)/1e9}')
  echo "  $name orders: $out; fulfilled=$nd in ${secs} s; cpu_us=$((c1 - c0)); stripe_calls=$(curl -s "http://127.0.0.1:$sport/stats")" >&2
  rec "$name" order_cpu "$(div $((c1 - c0)) "$nd" %.1f)"
  rec "$name" order_done "$nd"
  rec "$name" order_wchar "$(div $(( $(io_field "$PID" wchar) - w0 )) "$nd" %.0f)"
  rec "$name" order_wbytes "$(div $(( $(io_field "$PID" write_bytes) - b0 )) "$nd" %.0f)"
  rec "$name" order_hwm "$(hwm_mb "$PID")"
  stop "$PID"; stop "$sp"; if [ -n "$cb_pid" ]; then stop "$cb_pid"; fi
  rm -rf "$db"
}

# Startup with $SESSIONS sessions: fill, SIGTERM, then three warm starts to the first 200.
startup_run() {
  local db="$WORK/db-startup" out
  mkdir -p "$db"
  start_fulfilld "$db"
  out=$(gen "$WORK/unpaid.json" "$SECRET" closed 50 300 "$SESSIONS" 0)
  echo "  startup fill: $out" >&2
  rec fulfilld filled "$(kv "$out" ok)"
  stop "$PID"
  rec fulfilld shutdown_ms "$STOP_MS"; rec fulfilld shutdown_killed "$STOP_KILLED"
  rec fulfilld startup_db_per_session "$(div "$(stat -c %s "$db/f.redb")" "$(kv "$out" ok)" %.0f)"
  rec fulfilld startup_db_excl_raw "$(div $(( $(stat -c %s "$db/f.redb") - $(kv "$out" ok) * RAW_BYTES )) "$(kv "$out" ok)" %.0f)"
  rec fulfilld startup_db_mb "$(div "$(stat -c %s "$db/f.redb")" 1048576 %.1f)"
  for i in 1 2 3; do
    rec fulfilld "startup_repair_$i" "$(needs_repair "$db/f.redb")"
    start_fulfilld "$db"
    rec fulfilld "startup_ms_$i" "$READY"
    rec fulfilld startup_hwm "$(hwm_mb "$PID")"
    stop "$PID"
    rec fulfilld shutdown_ms "$STOP_MS"; rec fulfilld shutdown_killed "$STOP_KILLED"
  done
  rm -rf "$db"
}

echo "fulfilld compare: $(date -u '+%F %T UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  ack_run fulfilld; ack_run peer
  order_run fulfilld; order_run guide
  order_run fulfilld_cb
done
if [ "$STARTUP" = 1 ]; then startup_run; fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# Values of name/key over the rounds, "a–b" when they differ; and the ratio of the means.
vals() { awk -v n="$1" -v k="$2" '$1==n&&$2==k{print $3}' "$R" | sort -g | awk 'NR==1{a=$1} {b=$1; c++} END{if(!c) print "—"; else if(a==b) print a; else print a "–" b}'; }
mean() { awk -v n="$1" -v k="$2" '$1==n&&$2==k&&$3+0==$3{s+=$3;c++} END{if(c) printf "%.4f", s/c}' "$R"; }
ratio() { local a b; a=$(mean "$1" "$3"); b=$(mean "$2" "${4:-$3}"); awk -v a="$a" -v b="$b" 'BEGIN{if(a!=""&&b!=""&&b>0) printf "%.2f", a/b; else print "—"}'; }
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }

echo
echo "machine: $(nproc) cores; load average $LOAD0 at start, $LOAD1 at end; $(uptime)"
echo "fulfilld $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+local changes)'); $ROUNDS rounds A B A B, $SECS s per phase, $ORDERS orders per order run; ranges over rounds, ratio of means"
echo
row "measure (server on core 1, generator on core 0)" "fulfilld" "peer" "ratio" "target"
row "---" "---" "---" "---" "---"
row "CPU per acknowledged webhook, saturated (50 conns), µs" "$(vals fulfilld sat_cpu)" "$(vals peer sat_cpu) (peer-node)" "$(ratio fulfilld peer sat_cpu)" "≤ 60, ≤ 0.4×"
row "  acknowledged/s saturated" "$(vals fulfilld sat_rps)" "$(vals peer sat_rps)" "$(ratio fulfilld peer sat_rps)" ""
row "CPU per event, open loop 1,000/s, µs" "$(vals fulfilld o1000_cpu)" "$(vals peer o1000_cpu)" "$(ratio fulfilld peer o1000_cpu)" "≤ 200"
row "CPU per event, open loop 2,000/s, µs" "$(vals fulfilld o2000_cpu)" "$(vals peer o2000_cpu)" "$(ratio fulfilld peer o2000_cpu)" "≤ 130"
row "CPU per fulfilled order, no callback, µs" "$(vals fulfilld order_cpu)" "$(vals guide order_cpu) (guide)" "$(ratio fulfilld guide order_cpu)" "≤ 250, ≤ 0.7×"
row "CPU per fulfilled order, signed callback to a fast receiver, µs" "$(vals fulfilld_cb order_cpu)" "$(vals guide order_cpu) (guide, no callback)" "$(ratio fulfilld_cb guide order_cpu)" "≤ 250, ≤ 0.7×"
row "bytes written to disk per acknowledged webhook (write_bytes), saturated" "$(vals fulfilld sat_wbytes)" "$(vals peer sat_wbytes)" "—" "≤ 15 KB"
row "  wchar (all write(2) incl. HTTP responses) per acknowledged webhook, saturated" "$(vals fulfilld sat_wchar)" "$(vals peer sat_wchar)" "—" ""
row "  write_bytes / wchar per event at 2,000/s open loop" "$(vals fulfilld o2000_wbytes) / $(vals fulfilld o2000_wchar)" "$(vals peer o2000_wbytes) / $(vals peer o2000_wchar)" "—" ""
row "write_bytes / wchar per fulfilled order, no callback; with callback" "$(vals fulfilld order_wbytes) / $(vals fulfilld order_wchar); $(vals fulfilld_cb order_wbytes) / $(vals fulfilld_cb order_wchar)" "$(vals guide order_wbytes) / $(vals guide order_wchar)" "—" ""
row "database per session, bytes (file size / sessions), after the ack runs; excluding raw bodies (≈ file − events × $RAW_BYTES B)" "$(vals fulfilld ack_db_per_session); $(vals fulfilld ack_db_excl_raw) ($(vals fulfilld ack_sessions) sessions)" "—" "—" "≤ 2.5 KB (excl. raw bodies)"
row "database per session, bytes, $SESSIONS sessions; excluding raw bodies" "$(vals fulfilld startup_db_per_session); $(vals fulfilld startup_db_excl_raw) ($(vals fulfilld startup_db_mb) MB)" "—" "—" "≤ 2.5 KB (excl. raw bodies)"
row "open loop 2,000/s: p99 / p99.9, ms" "$(vals fulfilld o2000_p99) / $(vals fulfilld o2000_p999)" "$(vals peer o2000_p99) / $(vals peer o2000_p999)" "$(ratio fulfilld peer o2000_p99) / $(ratio fulfilld peer o2000_p999)" "≤ 5 / ≤ 15"
row "open loop 5,000/s: sustained (acked/s, errors), p99 ms" "$(vals fulfilld o5000_sustained) ($(vals fulfilld o5000_rps), $(vals fulfilld o5000_err)), $(vals fulfilld o5000_p99)" "$(vals peer o5000_sustained) ($(vals peer o5000_rps), $(vals peer o5000_err)), $(vals peer o5000_p99)" "$(ratio fulfilld peer o5000_p99)" "sustained, ≤ 25"
row "startup to first 200 /healthz, ms" "$(vals fulfilld startup_ms_1) / $(vals fulfilld startup_ms_2) / $(vals fulfilld startup_ms_3) ($SESSIONS sessions, warm); $(vals fulfilld ready_ms) empty" "$(vals peer ready_ms) (empty)" "—" "≤ 300"
row "  file marked for repair after SIGTERM (redb RECOVERY_REQUIRED), before each start" "$(vals fulfilld startup_repair_1) / $(vals fulfilld startup_repair_2) / $(vals fulfilld startup_repair_3); shutdown $(vals fulfilld shutdown_ms) ms, SIGKILL needed: $(vals fulfilld shutdown_killed)" "—" "—" "no"
row "peak RSS (VmHWM), ack runs up to 2,000/s / after 5,000/s, MB" "$(vals fulfilld o2000_hwm) / $(vals fulfilld ack_hwm)" "$(vals peer o2000_hwm) / $(vals peer ack_hwm)" "$(ratio fulfilld peer o2000_hwm) / $(ratio fulfilld peer ack_hwm)" "≤ 64"
row "peak RSS (VmHWM), order runs (no callback / callback) / $SESSIONS-session start, MB" "$(vals fulfilld order_hwm) / $(vals fulfilld_cb order_hwm) / $(vals fulfilld startup_hwm)" "$(vals guide order_hwm) (guide)" "$(ratio fulfilld guide order_hwm)" "≤ 64"
echo
echo "orders fulfilled per run: fulfilld $(vals fulfilld order_done), with callback $(vals fulfilld_cb order_done) (callbacks received $(vals fulfilld_cb callbacks)), guide (fake Stripe calls) $(vals guide order_done); 5,000/s phase took $(vals fulfilld o5000_secs) s (fulfilld) / $(vals peer o5000_secs) s (peer) for $SECS s of schedule"

if [ "$DASHBOARD" = 1 ]; then
  echo; echo "dashboard bench (cargo bench --bench dashboard):"
  cargo bench --bench dashboard 2>/dev/null
fi
