#!/usr/bin/env bash
# N SealedSecrets x 5 keys applied to a fresh namespace, then sigil-controller started
# cold: time until every Secret exists and every status is Synced. Before that, the API
# server's own limit for the same writes: a lean client (tests/src/bin/apiserver-limit.rs)
# creating N Secrets and applying N statuses in a scratch namespace, at a few
# concurrencies; the best is the limit. Prints one table: Sigil's wall, Secrets/s, peak
# RSS, the limit, their ratio, and the API requests the controller made per object.
# Usage: [ROUNDS=R] [EXTERNAL=M] bench/unseal.sh [N] [extra controller flags...]
#   N: SealedSecrets (default 4000). ROUNDS: rounds of limit-then-controller (default 3),
#   each reported in full on stderr, then one row per round and the median ratio on
#   stdout: on a 2-core machine one round's limit varies by half from run to run.
#   EXTERNAL: also M ExternalSecrets reading OpenBao
#   through one SecretStore, created before the controller starts and Ready at the end,
#   so that peak RSS covers both kinds (the standing target is for N=10000, EXTERNAL=1000).
# Release build. Needs the test environment (started here if it is not up; its kubectl).
set -euo pipefail
n=${1:-4000}
shift || true
external=${EXTERNAL:-0}
rounds=${ROUNDS:-3}
header() {
  printf '%8s %10s %12s %16s %12s %8s\n' N "wall (s)" "Secrets/s" "peak RSS (MiB)" "limit (s)" ratio
}
if ((rounds > 1)); then
  rows=()
  for ((round = 1; round <= rounds; round++)); do
    echo "bench: round $round of $rounds" >&2
    report=$(ROUNDS=1 "$0" "$n" "$@") || exit 1
    echo "$report" >&2
    rows+=("$(sed -n 2p <<<"$report")")
  done
  header
  printf '%s\n' "${rows[@]}"
  printf '%s\n' "${rows[@]}" | awk '{ print $6 }' | sort -g |
    awk '{ r[NR] = $1 } END { printf "median ratio over %d rounds: %.2f\n", NR, r[int((NR + 1) / 2)] }'
  exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/env" status >/dev/null 2>&1 || "$root/scripts/env" up
# shellcheck disable=SC1091
source "${SIGIL_ENV_DIR:-$root/.env}/env"
export KUBECONFIG
# The environment's own kubectl, at the pinned Kubernetes version, whatever the machine has.
PATH=$(dirname "$SIGIL_KUBECTL"):$PATH
cargo build --quiet --release --locked -p sigil-cli -p sigil-controller -p sigil-tests \
  --bin sigil --bin sigil-controller --bin apiserver-limit --manifest-path "$root/Cargo.toml"
target=${CARGO_TARGET_DIR:-$root/target}/release
sigil=$target/sigil
controller=$target/sigil-controller

ns=bench-$(date +%s)
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  # Empty the namespace at once rather than wait for its garbage collection.
  kubectl delete --raw "/apis/sigil.dev/v1/namespaces/$ns/sealedsecrets" >/dev/null 2>&1 || true
  kubectl delete --raw "/apis/sigil.dev/v1/namespaces/$ns/externalsecrets" >/dev/null 2>&1 || true
  kubectl delete --raw "/api/v1/namespaces/$ns/secrets" >/dev/null 2>&1 || true
  curl -sf -X DELETE -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/secret/metadata/$ns" >/dev/null 2>&1 || true
  kubectl delete --raw "/apis/sigil.dev/v1/namespaces/$ns-limit/sealedsecrets" >/dev/null 2>&1 || true
  kubectl delete --raw "/api/v1/namespaces/$ns-limit/secrets" >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" "$ns-limit" --wait=false >/dev/null 2>&1 || true
  [ -n "${BENCH_KEEP_LOG:-}" ] && cp "$work/controller.log" "$BENCH_KEEP_LOG"
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
if ((external > 0)); then
  echo "bench: loading $external ExternalSecrets (one OpenBao SecretStore) ..." >&2
  curl -sf -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"data\": {\"password\": \"$(openssl rand -hex 12)\"}}" "$VAULT_ADDR/v1/secret/data/$ns" >/dev/null
  kubectl create secret generic bao-token -n "$ns" --from-literal=token="$VAULT_TOKEN" >/dev/null
  python3 - "$ns" "$external" "$VAULT_ADDR" >"$work/externals.yaml" <<'PY'
import sys
ns, m, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"""apiVersion: sigil.dev/v1
kind: SecretStore
metadata: {{name: bao, namespace: {ns}}}
spec:
  provider:
    vault:
      server: {addr}
      path: secret
      version: v2
      auth: {{tokenSecretRef: {{name: bao-token, key: token}}}}""")
for i in range(m):
    print(f"""---
apiVersion: sigil.dev/v1
kind: ExternalSecret
metadata: {{name: ext-{i}, namespace: {ns}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: bao, kind: SecretStore}}
  target: {{name: ext-{i}}}
  data:
  - secretKey: password
    remoteRef: {{key: {ns}, property: password}}""")
PY
  kubectl create -f "$work/externals.yaml" >/dev/null
fi

pids=${SIGIL_ENV_DIR:-$root/.env}/pids
# Waits (up to a minute) until the API server and etcd are idle: garbage collection of
# what an earlier run deleted would otherwise be measured as part of the next.
quiesce() {
  python3 - "$(cat "$pids/kube-apiserver")" "$(cat "$pids/etcd")" <<'PY'
import os, sys, time
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    total = 0
    for pid in sys.argv[1:]:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / hz
    return total
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    before = cpu()
    time.sleep(1)
    if cpu() - before < 0.1:
        break
PY
}
quiesce
echo "bench: measuring the API server's limit for the same writes ..." >&2
kubectl create namespace "$ns-limit" >/dev/null
# One line per concurrency: concurrency, wall, and the CPU seconds the API server and the
# client spent in that pass.
read -r _ limit_wall limit_apiserver_cpu limit_client_cpu < <(
  "$target/apiserver-limit" "$ns-limit" "$n" 32 128 | sort -k2 -g | head -n 1)
kubectl delete --raw "/apis/sigil.dev/v1/namespaces/$ns-limit/sealedsecrets" >/dev/null
kubectl delete --raw "/api/v1/namespaces/$ns-limit/secrets" >/dev/null
quiesce

# Requests the API server served, by resource and verb, from its own metrics.
requests() {
  kubectl get --raw /metrics | awk '
    /^apiserver_request_total\{/ && /resource="(secrets|sealedsecrets|events)"/ {
      match($0, /resource="[a-z]+"/); r = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /verb="[A-Z]+"/); v = substr($0, RSTART + 6, RLENGTH - 7)
      match($0, /subresource="[a-z]*"/); s = substr($0, RSTART + 13, RLENGTH - 14)
      n[r (s == "" ? "" : "/" s) "_" v] += $NF
    }
    END { for (k in n) print k, n[k] }' | sort
}
requests >"$work/requests.before"

# Progress is read from the controller's own counter (cheap); the result is then checked
# against the API server once.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Waits until the controller has counted N Secrets unsealed, or exits 1 if it died. One
# Python process on one kept-alive connection: a curl and an awk every 50 ms took ~10 %
# of the 2 cores the controller and the API server are measured on.
wait_unsealed() {
  python3 - "$port" "$n" "$pid" <<'PY'
import http.client, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
prefix = 'sigil_unseal_total{result="Unsealed"} '
conn = None
while True:
    try:  # gone, or exited and not yet reaped: dead either way
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                sys.exit(1)
    except FileNotFoundError:
        sys.exit(1)
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        if any(line.startswith(prefix) and float(line[len(prefix):]) >= n for line in body.splitlines()):
            sys.exit(0)
    except (OSError, http.client.HTTPException):
        conn = None  # not listening yet, or the connection was closed
    time.sleep(0.05)
PY
}

# CPU seconds (user + system) of a process, from /proc.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
apiserver_cpu=$(cpu_seconds "$(cat "$pids/kube-apiserver")")
etcd_cpu=$(cpu_seconds "$(cat "$pids/etcd")")
start=$(date +%s.%N)
"$controller" --namespace "$ns" --watch-namespace "$ns" --http-addr "127.0.0.1:$port" \
  --leader-election false "$@" 2>"$work/controller.log" &
pid=$!
# The controller's counter is a cheap lower bound (an object may be counted more than
# once); from there the API server is asked, once a second, until every object is done.
wait_unsealed || { tail "$work/controller.log" >&2; exit 1; }
end=$(date +%s.%N)
# CPU up to the clock's end: the checks below list every object and would count too.
controller_cpu=$(cpu_seconds "$pid")
apiserver_cpu=$(awk "BEGIN { print $(cpu_seconds "$(cat "$pids/kube-apiserver")") - $apiserver_cpu }")
etcd_cpu=$(awk "BEGIN { print $(cpu_seconds "$(cat "$pids/etcd")") - $etcd_cpu }")
synced_count() {
  kubectl get sealedsecrets.sigil.dev -n "$ns" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Synced")].status}{"\n"}{end}' | grep -c True
}
# The counter ends the clock (its status written is the last thing a reconcile does);
# should it have counted an object twice, the clock runs on until the API server agrees.
until [ "$(synced_count)" -ge "$n" ]; do
  kill -0 "$pid" 2>/dev/null || { tail "$work/controller.log" >&2; exit 1; }
  sleep 0.2
  end=$(date +%s.%N)
done
external_ready() {
  kubectl get externalsecrets.sigil.dev -n "$ns" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True
}
while ((external > 0)) && [ "$(external_ready)" -lt "$external" ]; do
  kill -0 "$pid" 2>/dev/null || { tail "$work/controller.log" >&2; exit 1; }
  sleep 1
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
requests >"$work/requests.after"
wall=$(awk "BEGIN { print $end - $start }")
synced=$(kubectl get sealedsecrets.sigil.dev -n "$ns" -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(1 for o in items for c in (o.get("status") or {}).get("conditions", [])
          if c["type"] == "Synced" and c["status"] == "True"))')
secrets=$(kubectl get secrets -n "$ns" -l sigil.dev/sealed-secret --no-headers | wc -l)
[ "$synced" -eq "$n" ] && [ "$secrets" -eq "$n" ] || { echo "bench: only $synced synced, $secrets Secrets" >&2; exit 1; }
((external == 0)) || echo "bench: and $external ExternalSecrets Ready; peak RSS covers both" >&2
header
printf '%8d %10.2f %12.1f %16.1f %12.2f %8.2f\n' "$n" "$wall" "$(awk "BEGIN { print $n / $wall }")" \
  "$(awk "BEGIN { print $rss_kib / 1024 }")" "$limit_wall" "$(awk "BEGIN { print $wall / $limit_wall }")"
printf 'CPU seconds from start to end: sigil-controller %.2f, kube-apiserver %.2f, etcd %.2f (%s cores)\n' \
  "$controller_cpu" "$apiserver_cpu" "$etcd_cpu" "$(nproc)"
# Where the machine is saturated, wall time follows CPU: the cost per object says which
# side the ratio comes from, where the limit's own wall time varies from run to run.
printf 'CPU ms per object:    %14s %12s\n' client kube-apiserver
printf '  limit (lean client) %14.2f %12.2f\n' "$(awk "BEGIN { print $limit_client_cpu * 1000 / $n }")" \
  "$(awk "BEGIN { print $limit_apiserver_cpu * 1000 / $n }")"
printf '  sigil-controller    %14.2f %12.2f\n' "$(awk "BEGIN { print $controller_cpu * 1000 / $n }")" \
  "$(awk "BEGIN { print $apiserver_cpu * 1000 / $n }")"
echo "API requests per SealedSecret while the controller ran (resource verb count/N; the"
echo "checks of this script and kube-controller-manager's are among them):"
join -a 2 -e 0 -o 0,1.2,2.2 "$work/requests.before" "$work/requests.after" |
  awk -v n="$n" '{ d = $3 - $2; if (d > 0) { sub(/_/, " ", $1); printf "  %-28s %8.2f\n", $1, d / n } }'
