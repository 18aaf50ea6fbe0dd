#!/usr/bin/env bash
# certgate against nginx on the seed's own topology, side by side, on loopback only:
#
#   load -> proxy B (client mode, :8080) -> mTLS -> server A (server mode, :8443) -> backend (:8000)
#
# Both proxies get the same PKI (root -> intermediate -> leaves), backend and load generators.
# Every process this script starts is stopped by its PID on exit. Results: one table on stdout,
# bench/results/latest.md, bench/results/concurrency.svg and the table in BENCHMARKS.md.
#
# Knobs: RUNS (default 3, medians are taken), DURATION (seconds per load run, default 5),
# KEY_TYPES (default "p256 rsa2048"), IDLE (idle connections, default 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
KEY_TYPES=${KEY_TYPES:-"p256 rsa2048"}
IDLE=${IDLE:-10000}
SWEEP=${SWEEP:-"1 16 64 256"}

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ((${#need[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
for port in 8000 8080 8443; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: stop whatever listens there first" >&2
    exit 1
  fi
done

cargo build --release --quiet --bin certgate --example loadgen
CERTGATE=$ROOT/target/release/certgate
LOADGEN=$ROOT/target/release/examples/loadgen
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/certgate-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
STARTED=()   # every PID we started
cleanup() {
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  say "nothing listens on port $1"; return 1
}

wait_port_free() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0
    sleep 0.05
  done
}

# A process and its children (nginx: master and workers).
family() { echo "$1"; pgrep -P "$1" || true; }

# User+system CPU of a process family, in clock ticks.
cpu_ticks() {
  local total=0 pid
  for pid in $(family "$1"); do
    [[ -r /proc/$pid/stat ]] || continue
    # Fields after the command name: utime is the 12th, stime the 13th.
    local fields
    fields=$(sed 's/^.*) //' "/proc/$pid/stat")
    total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# Sum of a /proc/PID/status field (VmRSS, VmHWM) over a process family, in KiB.
mem_kib() {
  local total=0 pid
  for pid in $(family "$1"); do
    [[ -r /proc/$pid/status ]] || continue
    total=$((total + $(awk -v f="$2:" '$1 == f {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

TICK_US=$((1000000 / $(getconf CLK_TCK)))

record() { # proxy key metric value
  printf '{"proxy":"%s","key":"%s","metric":"%s","value":%s}\n' "$1" "$2" "$3" "$4" >> "$RESULTS"
}

# start_named NAME CMD...: runs CMD in the background, logging to $WORK/NAME.log; sets LAST_PID.
start_named() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

stop() {
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

nginx_conf() { # template pki-dir -> path
  local out=$WORK/$(basename "$1")
  sed -e "s|@WORK@|$WORK|g" -e "s|@PKI@|$2|g" "$ROOT/bench/nginx/$1" > "$out"
  echo "$out"
}

start_pair() { # proxy pki -> A_PID B_PID
  local proxy=$1 pki=$2
  case $proxy in
    certgate)
      start_named certgate-a env RUST_LOG=warn "$CERTGATE" server --listen 127.0.0.1:8443 \
        --upstream 127.0.0.1:8000 --cert "$pki/server.pem" --key "$pki/server.key" \
        --client-ca "$pki/ca.pem" --verify-depth 2
      A_PID=$LAST_PID; wait_port 8443
      start_named certgate-b env RUST_LOG=warn "$CERTGATE" client --listen 127.0.0.1:8080 \
        --upstream https://localhost:8443 --cert "$pki/client.pem" --key "$pki/client.key" \
        --ca "$pki/ca.pem" --verify-depth 2
      B_PID=$LAST_PID; wait_port 8080 ;;
    nginx|nginx-naive)
      start_named nginx-a nginx -c "$(nginx_conf server-a.conf "$pki")"
      A_PID=$LAST_PID; wait_port 8443
      local b=proxy-b.conf; [[ $proxy == nginx-naive ]] && b=proxy-b-naive.conf
      start_named nginx-b nginx -c "$(nginx_conf $b "$pki")"
      B_PID=$LAST_PID; wait_port 8080 ;;
  esac
  sleep 0.3
}

stop_pair() { stop "$B_PID" "$A_PID"; wait_port_free 8080; wait_port_free 8443; }

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else print v }'
}

# One wrk run against URL with C connections: records rps, p50, p99 and CPU per request.
wrk_run() { # proxy key url connections label
  local proxy=$1 key=$2 url=$3 connections=$4 label=$5
  local a0 b0 a1 b1 out requests
  a0=$(cpu_ticks "${A_PID:-0}"); b0=$(cpu_ticks "${B_PID:-0}")
  out=$(wrk -t"$(( connections < 2 ? 1 : 2 ))" -c"$connections" -d"${DURATION}s" --latency "$url")
  a1=$(cpu_ticks "${A_PID:-0}"); b1=$(cpu_ticks "${B_PID:-0}")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  record "$proxy" "$key" "${label}rps" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  record "$proxy" "$key" "${label}p50_ms" "$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")"
  record "$proxy" "$key" "${label}p99_ms" "$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")"
  if [[ -n ${A_PID:-} && $requests -gt 0 ]]; then
    record "$proxy" "$key" "${label}cpu_us_a" $(( (a1 - a0) * TICK_US / requests ))
    record "$proxy" "$key" "${label}cpu_us_b" $(( (b1 - b0) * TICK_US / requests ))
  fi
}

handshake_run() { # proxy key [--resume] label
  local proxy=$1 key=$2 flag=$3 label=$4 a0 a1 out count
  a0=$(cpu_ticks "$A_PID")
  out=$("$LOADGEN" handshakes --addr 127.0.0.1:8443 --dir "$WORK/pki-$key" --seconds "$DURATION" \
    --concurrency 8 $flag)
  a1=$(cpu_ticks "$A_PID")
  count=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["handshakes"])')
  record "$proxy" "$key" "${label}_per_s" "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["per_second"])')"
  [[ $count -gt 0 ]] && record "$proxy" "$key" "${label}_cpu_us_a" $(( (a1 - a0) * TICK_US / count ))
}

idle_run() { # proxy key
  local before after fifo out open
  before=$(mem_kib "$A_PID" VmRSS)
  fifo=$WORK/idle.fifo; rm -f "$fifo"; mkfifo "$fifo"
  "$LOADGEN" idle --addr 127.0.0.1:8443 --dir "$WORK/pki-$2" --connections "$IDLE" \
    < "$fifo" > "$WORK/idle.out" 2>&1 &
  local idle_pid=$!; STARTED+=("$idle_pid")
  exec 4>"$fifo"   # holds the loadgen's stdin open
  for _ in $(seq 1 600); do grep -q open "$WORK/idle.out" && break; sleep 0.1; done
  sleep 1
  after=$(mem_kib "$A_PID" VmRSS)
  open=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["open"])' "$WORK/idle.out" 2>/dev/null || echo 0)
  exec 4>&-
  wait "$idle_pid" 2>/dev/null || true
  record "$1" "$2" idle_open "$open"
  record "$1" "$2" idle_rss_kib_a "$after"
  [[ $open -gt 0 ]] && record "$1" "$2" idle_bytes_per_conn_a $(( (after - before) * 1024 / open ))
}

for key in $KEY_TYPES; do
  PKI=$WORK/pki-$key
  "$LOADGEN" pki --dir "$PKI" --key-type "$key"
  start_named backend nginx -c "$(nginx_conf backend.conf "$PKI")"
  BACKEND_PID=$LAST_PID; wait_port 8000

  say "== $key: backend alone"
  A_PID=; B_PID=
  for _ in $(seq "$RUNS"); do wrk_run backend "$key" http://127.0.0.1:8000/ 64 chain_; done

  for proxy in certgate nginx; do
    say "== $key: $proxy keep-alive chain"
    start_pair "$proxy" "$PKI"
    wrk -t2 -c64 -d1s http://127.0.0.1:8080/ >/dev/null   # warm-up: pools and sessions
    for _ in $(seq "$RUNS"); do wrk_run "$proxy" "$key" http://127.0.0.1:8080/ 64 chain_; done
    record "$proxy" "$key" peak_rss_kib_a "$(mem_kib "$A_PID" VmHWM)"
    record "$proxy" "$key" peak_rss_kib_b "$(mem_kib "$B_PID" VmHWM)"
    if [[ $key == p256 ]]; then
      say "== $key: $proxy concurrency sweep"
      for c in $SWEEP; do wrk_run "$proxy" "$key" http://127.0.0.1:8080/ "$c" "sweep${c}_"; done
    fi
    say "== $key: $proxy handshakes"
    for _ in $(seq "$RUNS"); do handshake_run "$proxy" "$key" "" full; done
    for _ in $(seq "$RUNS"); do handshake_run "$proxy" "$key" --resume resumed; done
    stop_pair

    say "== $key: $proxy $IDLE idle mTLS connections"
    start_pair "$proxy" "$PKI"
    idle_run "$proxy" "$key"
    stop_pair
  done

  say "== $key: nginx as the seed writes it (no upstream keep-alive)"
  start_pair nginx-naive "$PKI"
  for _ in $(seq "$RUNS"); do wrk_run nginx-naive "$key" http://127.0.0.1:8080/ 64 chain_; done
  stop_pair
  stop "$BACKEND_PID"; wait_port_free 8000

  # nginx's `return 200` answers before reading a body; uploads need a backend that reads
  # every byte (certgate's echo backend, the same for both proxies) to measure anything.
  start_named echo "$LOADGEN" echo --listen 127.0.0.1:8000
  ECHO_PID=$LAST_PID; wait_port 8000
  for proxy in certgate nginx; do
    say "== $key: $proxy 1 GiB upload"
    start_pair "$proxy" "$PKI"
    out=$("$LOADGEN" upload --addr 127.0.0.1:8080 --bytes $((1 << 30)) 2>&1 || echo '{"mib_per_second": 0}')
    say "$out"
    record "$proxy" "$key" upload_mib_s "$(echo "$out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["mib_per_second"])')"
    record "$proxy" "$key" upload_peak_rss_kib_a "$(mem_kib "$A_PID" VmHWM)"
    record "$proxy" "$key" upload_peak_rss_kib_b "$(mem_kib "$B_PID" VmHWM)"
    stop_pair
  done
  stop "$ECHO_PID"; wait_port_free 8000
done

mkdir -p "$ROOT/bench/results"
cp "$RESULTS" "$ROOT/bench/results/latest.jsonl"
python3 "$ROOT/bench/report.py" "$ROOT/bench/results/latest.jsonl" "$ROOT"
