#!/usr/bin/env bash
# Seals N Secret files (5 keys each) through the `sigil` CLI, one process per file as a
# pre-commit hook or CI job would, and once as a whole directory; prints a table with the
# CPU time each run took as a share of its wall time (200 % = two cores busy throughout).
# Usage: bench/seal-files.sh [N]   (default 1000; builds sigil in release mode, in
# CARGO_TARGET_DIR if set; SIGIL=path/to/sigil runs that binary instead)
set -euo pipefail
n=${1:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${SIGIL:-} ]]; then
  cargo build --quiet --release -p sigil-cli --manifest-path "$root/Cargo.toml"
fi
sigil=${SIGIL:-${CARGO_TARGET_DIR:-$root/target}/release/sigil}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$sigil" keys generate --private-out "$work/bench.key" --public-out "$work/bench.pub" >/dev/null
mkdir -p "$work/in"
for i in $(seq 1 "$n"); do
  cat >"$work/in/secret-$i.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: app-$i
  namespace: bench
stringData:
  username: user-$i
  password: $(head -c 24 /dev/urandom | base64)
  host: db-$i.bench.svc
  port: "5432"
  database: app_$i
YAML
done

now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }
# cpu: user + system CPU seconds of this shell's finished children so far (`times` runs
# in this shell, not in a $(...) subshell, whose children are not these).
cpu_now() {
  times >"$work/times"
  cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$work/times")
}
start=$(now) && cpu_now && cpu0=$cpu
for i in $(seq 1 "$n"); do
  "$sigil" seal --cert "$work/bench.pub" -f "$work/in/secret-$i.yaml" -w "$work/out-each/secret-$i.yaml"
done
each=$(calc "$(now) - $start") && cpu_now && each_cpu=$(calc "$cpu - $cpu0")

# The whole directory takes a fraction of a second, so other work on the machine easily
# skews one run: the fastest of three counts.
whole=
for _ in 1 2 3; do
  rm -rf "$work/out-dir"
  start=$(now) && cpu_now && cpu0=$cpu
  "$sigil" seal --cert "$work/bench.pub" -f "$work/in" -w "$work/out-dir" 2>/dev/null
  wall=$(calc "$(now) - $start") && cpu_now
  if [[ -z $whole ]] || awk "BEGIN { exit !($wall < $whole) }"; then
    whole=$wall whole_cpu=$(calc "$cpu - $cpu0")
  fi
done

start=$(now) && cpu_now && cpu0=$cpu
for i in $(seq 1 "$n"); do
  "$sigil" unseal --recovery-key "$work/bench.key" -f "$work/out-dir/secret-$i.yaml" >/dev/null 2>&1
done
unseal=$(calc "$(now) - $start") && cpu_now && unseal_cpu=$(calc "$cpu - $cpu0")

row() { # label, wall s, CPU s
  printf '%-44s %8d %12.2f %14.3f %12.2f %7.0f\n' "$1" "$n" "$2" "$(calc "$2 * 1000 / $n")" "$3" "$(calc "$3 * 100 / $2")"
}
printf '%-44s %8s %12s %14s %12s %7s\n' "run ($n files x 5 keys)" "files" "wall (s)" "per file (ms)" "CPU (s)" "CPU %"
row "sigil seal, one process per file" "$each" "$each_cpu"
row "sigil seal -f DIR, one process (best of 3)" "$whole" "$whole_cpu"
row "sigil unseal, one process per file" "$unseal" "$unseal_cpu"
