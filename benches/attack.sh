#!/usr/bin/env bash
# Attack measurements for issue 10 (not a timed test): starts a fulfilld binary
# on 127.0.0.1 with a fresh database for each phase, attacks it from this
# machine only, and prints what it held and how it answered.
#
#   cargo build --release && benches/attack.sh                 # target/release/fulfilld
#   benches/attack.sh /path/to/another/fulfilld                # e.g. an older build
#
# Phases (each bounded in count and time):
#   1. 2,000 half-open connections (half a request line, then nothing), with the
#      server under the common 1,024 open-files limit: connections it holds after
#      12 s, /healthz latency on a new connection during the flood, RSS.
#   2. 4 parallel 128 MiB POST /admin/login without a cookie: statuses, peak RSS.
#   3. 400 parallel 1 MiB webhook bodies that stall one byte short: statuses, RSS.
#   4. A declared Content-Length of 2 MiB on /webhook and 1 MiB on /admin/login,
#      no body sent: time to the answer.
# Needs python3. Traffic goes to 127.0.0.1 only.
set -euo pipefail
BIN=${1:-target/release/fulfilld}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release first)" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

start() {
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$WORK/db"; mkdir -p "$WORK/db"
  ( ulimit -n 1024
    exec env -i PATH="$PATH" RUST_LOG=error \
      FULFILLD_SERVER__LISTEN=127.0.0.1:$PORT FULFILLD_STORAGE__PATH="$WORK/db/f.redb" \
      FULFILLD_STRIPE__SECRET_KEY=sk_test_attack FULFILLD_STRIPE__WEBHOOK_SECRETS=whsec_attack \
      FULFILLD_STRIPE__API_BASE=http://127.0.0.1:9 FULFILLD_ADMIN__USERNAME=admin \
      FULFILLD_ADMIN__PASSWORD='a long attack password' "$BIN" serve ) 2>"$WORK/log" &
  PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0; sleep 0.1
  done
  echo "server did not start" >&2; cat "$WORK/log" >&2; exit 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

for phase in halfopen admin webhook oversize; do
  start
  timeout 90 python3 -u - "$phase" "$PORT" "$PID" <<'EOF' || echo "$phase: did not finish in 90 s"
import os, resource, socket, sys, threading, time
phase, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
ADDR = ("127.0.0.1", port)

def status_kib(key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])
    return 0

def rss(): return status_kib("VmRSS:") / 1024
def hwm(): return status_kib("VmHWM:") / 1024

def healthz(timeout=5.0):
    t = time.monotonic()
    try:
        s = socket.create_connection(ADDR, timeout=timeout)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(64)
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
        return f"{(time.monotonic()-t)*1000:.0f} ms" if ok else f"no answer ({data[:20]!r})"
    except Exception as e:
        return f"failed after {(time.monotonic()-t)*1000:.0f} ms ({type(e).__name__})"

def read_status(s, timeout):
    s.settimeout(timeout)
    try:
        data = s.recv(64)
        return data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else ("closed" if not data else "?")
    except socket.timeout:
        return "none"
    except OSError:
        return "reset"

def open_fds():
    try: return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError: return -1

base = rss()
if phase == "halfopen":
    socks, t0 = [], time.monotonic()
    for _ in range(2000):
        if time.monotonic() - t0 > 20:
            break
        try:
            s = socket.create_connection(ADDR, timeout=0.5)
            s.sendall(b"GET /healthz HTT")
            socks.append(s)
        except OSError:
            pass
    time.sleep(1)
    during = healthz()
    fds1 = open_fds()
    time.sleep(11)
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            alive += 0 if s.recv(1) == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print(f"half-open: {len(socks)} opened; server fds after 1 s: {fds1}; /healthz during flood: {during}; "
          f"still held by the server after 12 s: {alive}; /healthz then: {healthz()}; RSS {base:.0f} -> {rss():.0f} MiB")
elif phase == "admin":
    results = []
    def post():
        s = socket.create_connection(ADDR)
        total = 128 * 1024 * 1024
        s.sendall(f"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {total}\r\n\r\n".encode())
        block, sent, t = b"a" * (1 << 20), 0, time.monotonic()
        s.settimeout(10)
        try:
            while sent < total:
                sent += s.send(block)
        except OSError:
            pass
        results.append((read_status(s, 20), sent >> 20, time.monotonic() - t))
    ts = [threading.Thread(target=post) for _ in range(4)]
    [t.start() for t in ts]; [t.join(60) for t in ts]
    print(f"4 x 128 MiB admin posts: (status, MiB accepted, s) {sorted(results)}; RSS {base:.0f} -> {rss():.0f} MiB, peak {hwm():.0f} MiB")
elif phase == "webhook":
    statuses, held = [], []
    lock = threading.Lock()
    def stall():
        try:
            s = socket.create_connection(ADDR, timeout=10)
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,v1=00\r\nContent-Length: 1048576\r\n\r\n")
            s.sendall(b"{" * (1048576 - 1))
            with lock: held.append(s)
            st = read_status(s, 3)
        except OSError as e:
            st = type(e).__name__
        with lock: statuses.append(st)
    ts = [threading.Thread(target=stall) for _ in range(400)]
    t0 = time.monotonic()
    [t.start() for t in ts]; [t.join(30) for t in ts]
    counts = {k: statuses.count(k) for k in set(statuses)}
    print(f"400 stalled 1 MiB webhooks: statuses within 3 s {counts}; /healthz: {healthz()}; RSS {base:.0f} -> {rss():.0f} MiB, peak {hwm():.0f} MiB")
elif phase == "oversize":
    for path, n in (("/webhook", 2 << 20), ("/admin/login", 1 << 20)):
        s = socket.create_connection(ADDR)
        t = time.monotonic()
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n".encode())
        st = read_status(s, 25)
        print(f"declared {n >> 20} MiB on {path}, no body: {st} after {time.monotonic()-t:.2f} s")
EOF
  stop
done
