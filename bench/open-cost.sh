#!/usr/bin/env bash
# CPU cost of opening one sealed value against one X25519 operation, in one run (target:
# open ≤ 1.4 × X25519). Prints a table of
#   - OpenSSL's X25519: `openssl speed ecdhx25519`, where one op is one derive (one
#     variable-base scalar multiplication), timed by the process's CPU time; run before
#     and after the Rust benches, and averaged;
#   - x25519-dalek's Diffie-Hellman alone: the floor of an open (sigil-core's DH);
#   - `sigil_core::open` of one 64-byte value (base64 decode, HPKE decap and key
#     schedule, two ChaCha20-Poly1305 opens);
# the Rust ones from criterion (target/criterion/<bench>/new/estimates.json), timed by the
# thread's CPU time like openssl (the slope estimate), and the open also by the wall clock
# (the mean; on a busy machine it is higher, since other work takes turns on the cores).
# Usage: bench/open-cost.sh [SECONDS]   (criterion measurement time per bench, default 10)
# Honours CARGO_TARGET_DIR.
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
criterion=${CARGO_TARGET_DIR:-$root/target}/criterion

ossl() { # one X25519 op in ns, by CPU time
  openssl speed -mr -seconds 3 ecdhx25519 2>/dev/null | awk -F: '/^\+F5:/ { printf "%.1f\n", 1e9 / $4 }'
}
estimate() { # criterion's estimate $2 (mean, slope) in ns of the bench named $1
  python3 -c 'import json, sys; print("%.1f" % json.load(open(sys.argv[1]))[sys.argv[2]]["point_estimate"])' \
    "$criterion/$1/new/estimates.json" "$2"
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
bench() { # bench target, criterion filter; its output only if it fails
  cargo bench --quiet --manifest-path "$root/Cargo.toml" -p sigil-core --bench "$1" -- \
    --warm-up-time 2 --measurement-time "$secs" --noplot "$2" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
}

cargo bench --quiet --manifest-path "$root/Cargo.toml" -p sigil-core --benches --no-run
before=$(ossl)
bench open_parts '^CPU time/x25519 dh$'
bench seal '^(CPU time/)?open one 64-byte value$'
after=$(ossl)

x25519=$(awk "BEGIN { printf \"%.1f\", ($before + $after) / 2 }")
dalek=$(estimate "CPU time/x25519 dh" slope)
open_cpu=$(estimate "CPU time/open one 64-byte value" slope)
open_wall=$(estimate "open one 64-byte value" mean)
row() { # label, ns
  printf '%-52s %10.2f %9s\n' "$1" "$(awk "BEGIN { print $2 / 1000 }")" "$(awk "BEGIN { printf \"%.2f\", $2 / $x25519 }")"
}

printf '%-52s %10s %9s\n' "measure" "time (µs)" "× X25519"
row "openssl X25519 op, CPU time (mean of before, after)" "$x25519"
printf '%-52s %10s\n' "  before; after" "$(awk "BEGIN { printf \"%.2f; %.2f\", $before / 1000, $after / 1000 }")"
row "x25519-dalek DH alone, CPU time" "$dalek"
row "sigil open, one 64-byte value, CPU time" "$open_cpu"
row "sigil open, one 64-byte value, wall clock" "$open_wall"
printf '%-52s %10s %9s\n' "target: sigil open, CPU time" "" "1.40"
