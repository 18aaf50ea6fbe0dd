#!/usr/bin/env bash
# Profiles certgate's server mode (A) and client mode (B) under the keep-alive chain load of
# bench/run.sh, with perf's software clock (no hardware counters needed). Writes
# bench/results/profile-{a,b}.txt: the hottest functions, self and children.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_TO_PROFILE=${SECONDS_TO_PROFILE:-8}
command -v perf >/dev/null || { apt-get update; apt-get install -y linux-perf; }
# CERTGATE: the binary to profile (default: this tree's release build); ARGS: extra flags
# for both roles (e.g. "--workers 1"); OUT: the results' name suffix. CALLERS=1 records
# call stacks with DWARF (fewer samples, real callers) and also writes
# bench/results/callers-{a,b}OUT.txt: who calls memcpy, malloc and free (bench/callers.py).
cargo build --release --quiet --bin certgate --example loadgen
CERTGATE=${CERTGATE:-$ROOT/target/release/certgate}
ARGS=${ARGS:-}
OUT=${OUT:-}
WORK=$(mktemp -d /tmp/certgate-profile.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
"$ROOT/target/release/examples/loadgen" pki --dir "$WORK/pki" --key-type p256
sed -e "s|@WORK@|$WORK|g" -e "s|@PKI@|$WORK/pki|g" bench/nginx/backend.conf > "$WORK/backend.conf"
nginx -c "$WORK/backend.conf" & PIDS+=($!)
RUST_LOG=warn "$CERTGATE" server --listen 127.0.0.1:8443 --upstream 127.0.0.1:8000 \
  --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" --client-ca "$WORK/pki/ca.pem" --verify-depth 2 $ARGS & A=$!; PIDS+=($A)
sleep 0.5
RUST_LOG=warn "$CERTGATE" client --listen 127.0.0.1:8080 --upstream https://localhost:8443 \
  --cert "$WORK/pki/client.pem" --key "$WORK/pki/client.key" --ca "$WORK/pki/ca.pem" --verify-depth 2 $ARGS & B=$!; PIDS+=($B)
sleep 0.5
wrk -t2 -c64 -d1s http://127.0.0.1:8080/ >/dev/null
wrk -t2 -c64 -d$((SECONDS_TO_PROFILE + 2))s http://127.0.0.1:8080/ > "$WORK/wrk.txt" &
sleep 1
RECORD=(-F 2000 -g)
[[ ${CALLERS:-} == 1 ]] && RECORD=(-F 300 --call-graph dwarf,32768)
perf record -e cpu-clock "${RECORD[@]}" -p "$A" -o "$WORK/a.data" -- sleep "$SECONDS_TO_PROFILE" 2>/dev/null &
perf record -e cpu-clock "${RECORD[@]}" -p "$B" -o "$WORK/b.data" -- sleep "$SECONDS_TO_PROFILE" 2>/dev/null
wait %4 2>/dev/null || true
sleep 2
mkdir -p bench/results
for side in a b; do
  {
    echo "# by binary"
    perf report -i "$WORK/$side.data" --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' || true
    echo "# by crate (self time)"
    perf report -i "$WORK/$side.data" --no-children --sort dso,sym --stdio 2>/dev/null \
      | python3 "$ROOT/bench/crates.py"
    echo "# by function (self time)"
    perf report -i "$WORK/$side.data" --no-children --percent-limit 0.5 --stdio 2>/dev/null \
      | grep -E '^ +[0-9]' || true
  } > "bench/results/profile-$side$OUT.txt"
  if [[ ${CALLERS:-} == 1 ]]; then
    perf script -i "$WORK/$side.data" 2>/dev/null > "$WORK/$side.script"
    for target in memcpy malloc _int_free; do
      python3 "$ROOT/bench/callers.py" "$target" < "$WORK/$side.script"
    done > "bench/results/callers-$side$OUT.txt"
  fi
done
cat "$WORK/wrk.txt"
echo "== A (server mode), self time"; head -40 "bench/results/profile-a$OUT.txt"
echo "== B (client mode), self time"; head -40 "bench/results/profile-b$OUT.txt"
