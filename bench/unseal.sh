#!/usr/bin/env bash
# N SealedSecrets x 5 keys applied to a fresh namespace, then sigil-controller started
# cold: time until every Secret exists and every status is Synced. Prints a table.
# Usage: bench/unseal.sh [N] [extra controller flags...]   (default N=4000; release build)
# Needs the test environment (started here if it is not up) and kubectl.
set -euo pipefail
n=${1:-4000}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
command -v kubectl >/dev/null || { echo "bench: kubectl is needed to load the objects" >&2; exit 1; }
"$root/scripts/env" status >/dev/null 2>&1 || "$root/scripts/env" up
# shellcheck disable=SC1091
source "$root/.env/env"
export KUBECONFIG
cargo build --quiet --release --locked -p sigil-cli -p sigil-controller --manifest-path "$root/Cargo.toml"
sigil=$root/target/release/sigil
controller=$root/target/release/sigil-controller

ns=bench-$(date +%s)
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  # Empty the namespace at once rather than wait for its garbage collection.
  kubectl delete --raw "/apis/sigil.dev/v1/namespaces/$ns/sealedsecrets" >/dev/null 2>&1 || true
  kubectl delete --raw "/api/v1/namespaces/$ns/secrets" >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
kubectl apply --server-side -f "$root/charts/sigil/crds/" >/dev/null
kubectl create namespace "$ns" >/dev/null

# The cluster key is made offline and imported, so the controller starts with it.
"$sigil" keys generate --private-out "$work/bench.key" --public-out "$work/bench.pub" >/dev/null
"$sigil" keys import --controller-namespace "$ns" --private-key "$work/bench.key" >/dev/null
mkdir -p "$work/in"
python3 - "$work/in" "$ns" "$n" <<'PY'
import os, sys
out, ns, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(out, "secrets.yaml"), "w") as f:
    for i in range(n):
        f.write(f"""---
apiVersion: v1
kind: Secret
metadata: {{name: app-{i}, namespace: {ns}}}
stringData: {{username: user-{i}, password: "{os.urandom(12).hex()}", host: db-{i}.svc, port: "5432", database: app_{i}}}
""")
PY
"$sigil" seal --cert "$work/bench.pub" -f "$work/in" -w "$work/out" 2>/dev/null
echo "bench: loading $n SealedSecrets into namespace $ns ..." >&2
kubectl create -f "$work/out/secrets.yaml" >/dev/null

# Progress is read from the controller's own counter (cheap); the result is then checked
# against the API server once.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
unsealed() {
  curl -s "http://127.0.0.1:$port/metrics" | awk '/^sigil_unseal_total\{result="Unsealed"\}/ {n = $2} END {print n + 0}'
}

start=$(date +%s.%N)
"$controller" --namespace "$ns" --watch-namespace "$ns" --http-addr "127.0.0.1:$port" \
  --leader-election false "$@" 2>"$work/controller.log" &
pid=$!
# The controller's counter is a cheap lower bound (an object may be counted more than
# once); from there the API server is asked, once a second, until every object is done.
while [ "$(unsealed || echo 0)" -lt "$n" ]; do
  kill -0 "$pid" 2>/dev/null || { tail "$work/controller.log" >&2; exit 1; }
  sleep 0.2
done
synced_count() {
  kubectl get sealedsecrets.sigil.dev -n "$ns" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Synced")].status}{"\n"}{end}' | grep -c True
}
until [ "$(synced_count)" -ge "$n" ]; do
  kill -0 "$pid" 2>/dev/null || { tail "$work/controller.log" >&2; exit 1; }
  sleep 1
done
end=$(date +%s.%N)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
wall=$(awk "BEGIN { print $end - $start }")
synced=$(kubectl get sealedsecrets.sigil.dev -n "$ns" -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(1 for o in items for c in (o.get("status") or {}).get("conditions", [])
          if c["type"] == "Synced" and c["status"] == "True"))')
secrets=$(kubectl get secrets -n "$ns" -l sigil.dev/sealed-secret --no-headers | wc -l)
[ "$synced" -eq "$n" ] && [ "$secrets" -eq "$n" ] || { echo "bench: only $synced synced, $secrets Secrets" >&2; exit 1; }
printf '%8s %10s %12s %16s\n' N "wall (s)" "Secrets/s" "peak RSS (MiB)"
printf '%8d %10.2f %12.1f %16.1f\n' "$n" "$wall" "$(awk "BEGIN { print $n / $wall }")" "$(awk "BEGIN { print $rss_kib / 1024 }")"
