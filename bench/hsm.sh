#!/usr/bin/env bash
# Full mTLS handshakes per second with server A's key in a PKCS#11 token (SoftHSM2) next to
# the same key in a file, on loopback. Prints a markdown table for BENCHMARKS.md.
#
# Knobs: RUNS (default 3, the median is taken), DURATION (seconds per run, default 5),
# KEY_TYPES (default "p256 rsa2048"), CONCURRENCY (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
KEY_TYPES=${KEY_TYPES:-"p256 rsa2048"}
CONCURRENCY=${CONCURRENCY:-8}
MODULE=/usr/lib/softhsm/libsofthsm2.so

if [[ ! -e $MODULE ]] || ! command -v python3 >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends softhsm2 python3
fi
cargo build --release --quiet --bin certgate --example loadgen
CERTGATE=$ROOT/target/release/certgate
LOADGEN=$ROOT/target/release/examples/loadgen

WORK=$(mktemp -d /tmp/certgate-hsm-bench.XXXXXX)
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}

# A token of our own.
export SOFTHSM2_CONF=$WORK/softhsm2.conf
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 5678 >/dev/null
printf '1234\n' > "$WORK/pin"

BACKEND_PORT=$(free_port)
"$LOADGEN" echo --listen "127.0.0.1:$BACKEND_PORT" & STARTED+=($!)
wait_port "$BACKEND_PORT"

median() { python3 -c 'import sys, statistics; print(round(statistics.median(float(x) for x in sys.argv[1:])))' "$@"; }

run() { # pki-dir key-argument -> median handshakes per second
  local dir=$1 key=$2 port pid results=()
  port=$(free_port)
  "$CERTGATE" server --listen "127.0.0.1:$port" --upstream "127.0.0.1:$BACKEND_PORT" \
    --cert "$dir/server.pem" --key "$key" --client-ca "$dir/ca.pem" --verify-depth 2 \
    --log-level error & pid=$!; STARTED+=("$pid")
  wait_port "$port"
  for _ in $(seq "$RUNS"); do
    results+=("$("$LOADGEN" handshakes --addr "127.0.0.1:$port" --dir "$dir" \
      --seconds "$DURATION" --concurrency "$CONCURRENCY" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["per_second"])')")
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  median "${results[@]}"
}

echo "| server key | key in a file (handshakes/s) | key in SoftHSM2 (handshakes/s) | token / file |"
echo "|---|---|---|---|"
id=1
for key_type in $KEY_TYPES; do
  dir=$WORK/pki-$key_type
  "$LOADGEN" pki --dir "$dir" --key-type "$key_type" >/dev/null
  softhsm2-util --import "$dir/server.key" --token bench --label "server-$key_type" \
    --id "0$id" --pin 1234 >/dev/null
  id=$((id + 1))
  file=$(run "$dir" "$dir/server.key")
  token=$(run "$dir" "pkcs11:token=bench;object=server-$key_type?module-path=$MODULE&pin-source=file:$WORK/pin")
  ratio=$(python3 -c "print(f'{$token / $file:.2f}x')")
  echo "| $key_type | $file | $token | $ratio |"
done
