#!/usr/bin/env bash
# Seals N Secret files (5 keys each) through the `sigil` CLI, one process per file as a
# pre-commit hook or CI job would, and once as a whole directory; prints a table.
# Usage: bench/seal-files.sh [N]   (default 1000; builds sigil in release mode)
set -euo pipefail
n=${1:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release -p sigil-cli --manifest-path "$root/Cargo.toml"
sigil="$root/target/release/sigil"
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
start=$(now)
for i in $(seq 1 "$n"); do
  "$sigil" seal --cert "$work/bench.pub" -f "$work/in/secret-$i.yaml" -w "$work/out-each/secret-$i.yaml"
done
each=$(calc "$(now) - $start")

start=$(now)
"$sigil" seal --cert "$work/bench.pub" -f "$work/in" -w "$work/out-dir" 2>/dev/null
whole=$(calc "$(now) - $start")

start=$(now)
for i in $(seq 1 "$n"); do
  "$sigil" unseal --recovery-key "$work/bench.key" -f "$work/out-dir/secret-$i.yaml" >/dev/null 2>&1
done
unseal=$(calc "$(now) - $start")

printf '%-40s %8s %12s %14s\n' "run ($n files x 5 keys)" "files" "wall (s)" "per file (ms)"
printf '%-40s %8d %12.2f %14.3f\n' "sigil seal, one process per file" "$n" "$each" "$(calc "$each * 1000 / $n")"
printf '%-40s %8d %12.2f %14.3f\n' "sigil seal -f DIR, one process" "$n" "$whole" "$(calc "$whole * 1000 / $n")"
printf '%-40s %8d %12.2f %14.3f\n' "sigil unseal, one process per file" "$n" "$unseal" "$(calc "$unseal * 1000 / $n")"
