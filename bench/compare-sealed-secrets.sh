#!/usr/bin/env bash
# Sigil against Bitnami's sealed-secrets. For each N: the same N
# Secrets x 5 keys, sealed by each tool for a fresh namespace of its own and created
# there, then one controller started cold on the same apiserver: sigil-controller;
# Bitnami's controller with its client rate limits off (--kubeclient-qps -1); Bitnami's
# with its defaults (client-go's 5 qps, burst 10), stopped after --defaults-timeout and
# reported at the rate reached so far. Done means every Secret exists and every status
# condition Synced is True (both write one), as the apiserver's watches see it; wall is
# from the controller's start; peak RSS is its VmHWM. Then `kubeseal` against
# `sigil seal`, offline with a certificate, on --files Secret files (5 keys each).
# Not a test: it prints two tables and exits 0 whatever the numbers are.
#
# Usage: bench/compare-sealed-secrets.sh [options] [N...]   (default N: 1000)
#   --defaults-timeout S  stop Bitnami's run with default rate limits after S seconds
#                         (default 120; 0: never), and project its wall from its rate
#   --files F             Secret files for the sealing table (default 1000; 0: skip it)
#   --env E               private (default): a throwaway environment of its own
#                         (scripts/env up with SIGIL_ENV_DIR in a temporary directory);
#                         shared: the running environment (${SIGIL_ENV_DIR:-.env}, started
#                         if down). Each controller only watches its own namespace.
#
# Builds: sigil and sigil-controller (release, --locked); from the Go module proxy, once,
# into ${SIGIL_CACHE:-~/.cache/sigil}/: kubeseal (KUBESEAL_VERSION, by scripts/env up) and
# Bitnami's controller (SEALED_SECRETS_CONTROLLER_VERSION, the same release, by scripts/env
# install-bitnami-controller; tests/env/versions.env). Bitnami's controller only knows
# in-cluster configuration, so it runs in a mount namespace of its own (unshare) where a
# tmpfs on /run holds /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt} (the
# admin token and the test CA); its key is an RSA 4096 certificate made with openssl and
# stored as the labelled Secret it looks for, as sigil-controller's key is imported with
# `sigil keys import`.
# Both act as the admin. Everything this run made is deleted at the end (namespaces
# labelled sigil.dev/bench=<run>); BENCH_KEEP=1 keeps the temporary directory (logs).
set -euo pipefail
defaults_timeout=120 files=1000 envmode=private sizes=()
while (($#)); do
  case $1 in
    --defaults-timeout) defaults_timeout=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --env) envmode=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) sizes+=("$1"); shift ;;
  esac
done
((${#sizes[@]})) || sizes=(1000)
for v in "${sizes[@]}"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench: N must be a whole number > 0, not '$v'" >&2; exit 2; }
done
[[ $defaults_timeout =~ ^[0-9]+$ && $files =~ ^[0-9]+$ ]] ||
  { echo "bench: --defaults-timeout and --files are whole numbers" >&2; exit 2; }
[[ $envmode == private || $envmode == shared ]] || { echo "bench: --env is private or shared" >&2; exit 2; }
for cmd in openssl unshare python3; do
  command -v "$cmd" >/dev/null || { echo "bench: $cmd is needed" >&2; exit 1; }
done

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
# shellcheck source=tests/env/versions.env
source "$root/tests/env/versions.env"

nice -n 10 cargo build --quiet --release --locked -p sigil-cli -p sigil-controller \
  --manifest-path "$root/Cargo.toml"
target=${CARGO_TARGET_DIR:-$root/target}/release
sigil=$target/sigil
controller=$target/sigil-controller
echo "bench: Bitnami's controller $SEALED_SECRETS_CONTROLLER_VERSION (built once from the Go module proxy) ..." >&2
bitnami=$("$root/scripts/env" install-bitnami-controller | tail -n 1)

bench_init
bench_env
kubeseal=${SIGIL_KUBESEAL:?the environment has no kubeseal (SIGIL_KUBESEAL); run scripts/env up}
export BENCH_SIGIL=$sigil BENCH_CONTROLLER=$controller BENCH_BITNAMI=$bitnami \
  BENCH_KUBESEAL=$kubeseal BENCH_DEFAULTS_TIMEOUT=$defaults_timeout \
  BENCH_BITNAMI_VERSION=$SEALED_SECRETS_CONTROLLER_VERSION
bench_pylib

cat >"$work/bench.py" <<'PY'
"""The bench's client side: keys, Secrets, sealing, loading, one cold run, tables, cleanup."""
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

from benchlib import E, LABEL, RUN, WORK, alive, apply_crds, cleanup, kube, load_state, par, save_state

SIGIL_SS = "/apis/sigil.dev/v1/namespaces/{ns}/sealedsecrets"
BITNAMI_SS = "/apis/bitnami.com/v1alpha1/namespaces/{ns}/sealedsecrets"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
RESULTS = os.path.join(WORK, "results.jsonl")
BITNAMI_KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"


def secret_docs(ns, n):
    """N Secrets x 5 keys in `ns`; the same names and values in every namespace and run."""
    docs = []
    for i in range(n):
        password = hashlib.sha256(f"sigil-bench-{i}".encode()).hexdigest()[:24]
        docs.append(f"""---
apiVersion: v1
kind: Secret
metadata:
  name: app-{i}
  namespace: {ns}
stringData:
  username: user-{i}
  password: "{password}"
  host: db-{i}.{ns}.svc
  port: "5432"
  database: app_{i}
""")
    return "".join(docs)


def cmd_secrets(ns, n, out):
    """Writes N Secrets for `ns` into the file `out`."""
    with open(out, "w") as f:
        f.write(secret_docs(ns, int(n)))


def cmd_files(n, folder):
    """Writes N Secret files (one Secret each, namespace bench) into `folder`."""
    os.makedirs(folder, exist_ok=True)
    text = secret_docs("bench", int(n)).split("---\n")[1:]
    for i, doc in enumerate(text):
        with open(os.path.join(folder, f"secret-{i}.yaml"), "w") as f:
            f.write(doc)


def cmd_namespace(ns):
    state = load_state()
    state["namespaces"] = state.get("namespaces", []) + [ns]
    save_state(state)
    kube.call("POST", "/api/v1/namespaces",
              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {LABEL: RUN}}})


def cmd_crds():
    apply_crds()


def cmd_bitnami_key(ns, crt, key):
    """The key pair Bitnami's controller looks for in its namespace: a TLS Secret labelled
    sealedsecrets.bitnami.com/sealed-secrets-key=active."""
    data = {}
    for field, path in (("tls.crt", crt), ("tls.key", key)):
        with open(path, "rb") as f:
            data[field] = base64.b64encode(f.read()).decode()
    kube.call("POST", SECRETS.format(ns=ns),
              {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "sealed-secrets-key-bench",
                            "labels": {BITNAMI_KEY_LABEL: "active", LABEL: RUN}},
               "data": data})


def cmd_load(kind, ns, path):
    """Creates every SealedSecret of the sealed file `path` in `ns`, 16 at a time."""
    base = (SIGIL_SS if kind == "sigil" else BITNAMI_SS).format(ns=ns)
    try:
        import yaml
    except ImportError:
        subprocess.run(["kubectl", "create", "-f", path], check=True, stdout=subprocess.DEVNULL)
        return
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        d["metadata"].setdefault("labels", {})[LABEL] = RUN
    par(lambda d: kube.call("POST", base, d), docs)


class Tracker:
    """Follows one collection of `ns` (list, then watch; again when a watch ends) and
    keeps the names of the objects that `done(obj)` accepts."""

    def __init__(self, path, done, names, cond):
        self.path, self.done, self.names, self.cond = path, done, names, cond
        self.have, self.listed = set(), threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def see(self, kind, obj):
        name = obj["metadata"]["name"]
        if name not in self.names:
            return
        with self.cond:
            if kind != "DELETED" and self.done(obj):
                self.have.add(name)
            else:
                self.have.discard(name)
            self.cond.notify_all()

    def run(self):
        while True:
            listing = kube.json("GET", self.path)
            rv = listing["metadata"]["resourceVersion"]
            with self.cond:
                self.have.clear()
            for obj in listing["items"]:
                self.see("ADDED", obj)
            self.listed.set()
            query = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv, "timeoutSeconds": "240"})
            try:
                for _, line in kube.lines(f"{self.path}?{query}"):
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break  # e.g. 410 Gone: list again
                    self.see(event["type"], event["object"])
            except Exception as err:  # the connection broke: list again
                print(f"bench: watch {self.path}: {err}; listing again", file=sys.stderr)
                time.sleep(0.2)


def synced(obj):
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Synced" and c.get("status") == "True" for c in conds)


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmd_run(label, kind, ns, n, cap, log, *argv):
    """Starts argv (a controller) after the watches have listed; waits until all N are
    done, the controller exits, or `cap` seconds pass (0: no cap); appends the result."""
    n, cap = int(n), float(cap)
    names = {f"app-{i}" for i in range(n)}
    cond = threading.Condition()
    ss = Tracker((SIGIL_SS if kind == "sigil" else BITNAMI_SS).format(ns=ns), synced, names, cond)
    secrets = Tracker(SECRETS.format(ns=ns), lambda _: True, names, cond)
    ss.listed.wait(60)
    secrets.listed.wait(60)
    if ss.have or secrets.have:
        sys.exit(f"bench: namespace {ns} is not fresh: {len(ss.have)} Synced, {len(secrets.have)} Secrets")
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    done = 0
    end = None
    capped = died = False
    last_print = start
    try:
        with cond:
            while True:
                done = len(ss.have & secrets.have)
                now = time.monotonic()
                if done >= n:
                    end = now
                    break
                if proc.poll() is not None:
                    died, end = True, now
                    break
                if cap and now - start >= cap:
                    capped, end = True, now
                    break
                if now - last_print >= 30:
                    print(f"bench: {label}: {done}/{n} after {now - start:.0f} s", file=sys.stderr)
                    last_print = now
                cond.wait(0.5)
        rss = vm_hwm_kib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if died:
        with open(log, errors="replace") as f:
            tail = f.readlines()[-15:]
        sys.exit(f"bench: {label} exited with {proc.returncode} after {end - start:.1f} s, "
                 f"{done}/{n} done; last lines of {log}:\n" + "".join(tail))
    result = {"label": label, "n": n, "done": done, "wall": end - start, "rss_kib": rss, "capped": capped,
              "cap": cap}
    with open(RESULTS, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"bench: {label}, N={n}: {done}/{n} in {end - start:.2f} s{' (capped)' if capped else ''}",
          file=sys.stderr)


def cmd_drop(ns):
    """Deletes a finished run's objects and namespace and waits (up to 2 min) until the
    namespace is gone, so its garbage collection does not load the next run."""
    gone = (200, 202, 404)
    for path in (SIGIL_SS, BITNAMI_SS, SECRETS):
        kube.call("DELETE", path.format(ns=ns), ok=gone)
    kube.call("DELETE", f"/api/v1/namespaces/{ns}", ok=gone)
    deadline = time.time() + 120
    while time.time() < deadline:
        status, _ = kube.call("GET", f"/api/v1/namespaces/{ns}", ok=None)
        if status == 404:
            return
        time.sleep(0.5)
    print(f"bench: namespace {ns} still terminating after 2 min; going on", file=sys.stderr)


def cmd_table():
    with open(RESULTS) as f:
        rows = [json.loads(line) for line in f]
    sigil = {r["n"]: r["wall"] for r in rows if r["label"] == "sigil-controller"}
    print(f"{'controller / config':<44} {'N':>6} {'wall (s)':>10} {'Secrets/s':>10} "
          f"{'peak RSS (MiB)':>15} {'ratio':>7}")
    notes = ["ratio: wall / sigil-controller's wall at the same N"]
    for r in rows:
        rate = r["done"] / r["wall"] if r["wall"] else 0.0
        wall, mark = r["wall"], ""
        if r["capped"]:
            # Projected at the rate so far (start-up included), so a lower bound on time.
            wall = r["n"] / rate if rate else float("inf")
            mark = "~"
            notes.append(f"~ {r['label']}, N={r['n']}: stopped after {r['cap']:.0f} s with {r['done']} of "
                         f"{r['n']} done; wall projected as N / (done / {r['wall']:.1f} s); "
                         f"peak RSS until then")
        ratio = wall / sigil[r["n"]] if r["n"] in sigil else float("nan")
        print(f"{r['label']:<44} {r['n']:>6} {mark + format(wall, '.2f'):>10} {rate:>10.1f} "
              f"{r['rss_kib'] / 1024:>15.1f} {mark + format(ratio, '.1f'):>7}")
    for note in notes:
        print(note)


def cmd_cleanup():
    """On exit: every namespace this run made, each collection in it first."""
    cleanup(load_state(), [SIGIL_SS, BITNAMI_SS, SECRETS], [])


if __name__ == "__main__":
    fn = globals()["cmd_" + sys.argv[1].replace("-", "_")]
    fn(*sys.argv[2:])
PY

# The Bitnami key pair (its default key size) and Sigil's, made offline.
openssl req -x509 -newkey rsa:4096 -nodes -days 3650 -subj "/CN=sealed-secret/O=sealed-secret" \
  -keyout "$work/bitnami.key" -out "$work/bitnami.crt" 2>/dev/null
"$sigil" keys generate --private-out "$work/sigil.key" --public-out "$work/sigil.pub" >/dev/null
python3 "$work/bench.py" crds

# What Bitnami's controller needs to find in-cluster: the apiserver's address in
# KUBERNETES_SERVICE_{HOST,PORT}, the token and CA in /var/run/secrets/..., which a tmpfs
# on /run shows to it alone (its own mount namespace).
kube_hostport=${SIGIL_KUBE_SERVER#https://}
mkdir -p "$work/sa"
printf '%s' "$SIGIL_KUBE_ADMIN_TOKEN" >"$work/sa/token"
cp "$SIGIL_KUBE_CA_FILE" "$work/sa/ca.crt"
unshare_flags=(--mount --propagation private)
((EUID == 0)) || unshare_flags+=(--map-root-user)
# shellcheck disable=SC2016  # expanded by the inner shell
incluster='set -e
run=$(readlink -f /var/run)
token=$(cat "$SA/token"); ca=$(cat "$SA/ca.crt")
mount -t tmpfs -o mode=0755 tmpfs "$run"
mkdir -p "$run/secrets/kubernetes.io/serviceaccount"
printf "%s" "$token" >"$run/secrets/kubernetes.io/serviceaccount/token"
printf "%s\n" "$ca" >"$run/secrets/kubernetes.io/serviceaccount/ca.crt"
exec "$@"'

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run_bitnami LABEL N CONFIG_FLAGS...: one cold run of Bitnami's controller in a fresh namespace.
run_bitnami() {
  local label=$1 n=$2 ns cap=0
  shift 2
  ns=bench-cmp-$run-bitnami-$n-$(( ++seq ))
  [[ $label == *defaults* ]] && cap=$defaults_timeout
  python3 "$work/bench.py" namespace "$ns"
  python3 "$work/bench.py" bitnami-key "$ns" "$work/bitnami.crt" "$work/bitnami.key"
  python3 "$work/bench.py" secrets "$ns" "$n" "$work/$ns.in.yaml"
  "$kubeseal" --cert "$work/bitnami.crt" -o yaml <"$work/$ns.in.yaml" >"$work/$ns.sealed.yaml"
  python3 "$work/bench.py" load bitnami "$ns" "$work/$ns.sealed.yaml"
  echo "bench: $label, N=$n: controller started cold ..." >&2
  SA=$work/sa KUBERNETES_SERVICE_HOST=${kube_hostport%:*} KUBERNETES_SERVICE_PORT=${kube_hostport##*:} \
    POD_NAMESPACE=$ns python3 "$work/bench.py" run "$label" bitnami "$ns" "$n" "$cap" "$work/$ns.log" \
    unshare "${unshare_flags[@]}" sh -c "$incluster" sh "$bitnami" \
    --all-namespaces=false --listen-addr "127.0.0.1:$(free_port)" \
    --listen-metrics-addr "127.0.0.1:$(free_port)" "$@"
  python3 "$work/bench.py" drop "$ns"
}

run_sigil() {
  local n=$1 ns
  ns=bench-cmp-$run-sigil-$n-$(( ++seq ))
  python3 "$work/bench.py" namespace "$ns"
  "$sigil" keys import --controller-namespace "$ns" --private-key "$work/sigil.key" >/dev/null
  python3 "$work/bench.py" secrets "$ns" "$n" "$work/$ns.in.yaml"
  "$sigil" seal --cert "$work/sigil.pub" -f "$work/$ns.in.yaml" -w "$work/$ns.sealed.yaml" 2>/dev/null
  python3 "$work/bench.py" load sigil "$ns" "$work/$ns.sealed.yaml"
  echo "bench: sigil-controller, N=$n: controller started cold ..." >&2
  python3 "$work/bench.py" run sigil-controller sigil "$ns" "$n" 0 "$work/$ns.log" \
    "$controller" --namespace "$ns" --watch-namespace "$ns" --http-addr "127.0.0.1:$(free_port)" \
    --leader-election false
  python3 "$work/bench.py" drop "$ns"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
seq=0
for n in "${sizes[@]}"; do
  run_sigil "$n"
  run_bitnami "Bitnami $SEALED_SECRETS_CONTROLLER_VERSION, rate limits off" "$n" --kubeclient-qps=-1
  run_bitnami "Bitnami $SEALED_SECRETS_CONTROLLER_VERSION, defaults" "$n"
done

# Sealing offline: one process per file (a pre-commit hook, a CI step), then everything
# in one process (`sigil seal -f DIR`; kubeseal reads a multi-document stream).
seal_rows=()
if ((files > 0)); then
  echo "bench: sealing $files Secret files with each tool ..." >&2
  python3 "$work/bench.py" files "$files" "$work/files"
  now() { date +%s.%N; }
  calc() { awk "BEGIN { print $* }"; }
  mkdir -p "$work/sealed-sigil" "$work/sealed-kubeseal"
  start=$(now)
  for ((i = 0; i < files; i++)); do
    "$sigil" seal --cert "$work/sigil.pub" -f "$work/files/secret-$i.yaml" \
      -w "$work/sealed-sigil/secret-$i.yaml" 2>/dev/null
  done
  sigil_each=$(calc "$(now) - $start")
  start=$(now)
  for ((i = 0; i < files; i++)); do
    "$kubeseal" --cert "$work/bitnami.crt" -o yaml -f "$work/files/secret-$i.yaml" \
      -w "$work/sealed-kubeseal/secret-$i.yaml"
  done
  kubeseal_each=$(calc "$(now) - $start")
  start=$(now)
  "$sigil" seal --cert "$work/sigil.pub" -f "$work/files" -w "$work/sealed-sigil-dir" 2>/dev/null
  sigil_one=$(calc "$(now) - $start")
  start=$(now)
  awk 'FNR == 1 { print "---" } { print }' "$work"/files/*.yaml |
    "$kubeseal" --cert "$work/bitnami.crt" -o yaml >"$work/sealed-kubeseal-all.yaml"
  kubeseal_one=$(calc "$(now) - $start")
  [[ $(grep -c '^kind: SealedSecret' "$work/sealed-kubeseal-all.yaml") == "$files" ]] ||
    { echo "bench: kubeseal sealed $(grep -c '^kind: SealedSecret' "$work/sealed-kubeseal-all.yaml") of $files" >&2; exit 1; }
  seal_rows=(
    "sigil seal, one process per file|$sigil_each"
    "kubeseal, one process per file|$kubeseal_each"
    "sigil seal -f DIR, one process|$sigil_one"
    "kubeseal, one multi-document stream|$kubeseal_one"
  )
fi

echo
echo "Cold start of each controller, N SealedSecrets x 5 keys; $(nproc) cores, load average before: $load_before"
python3 "$work/bench.py" table
if ((${#seal_rows[@]})); then
  echo
  # ratio: wall / sigil seal's wall in the same mode (per file, or one process).
  printf '%-44s %6s %10s %14s %7s\n' "sealing offline with a certificate" files "wall (s)" "per file (ms)" ratio
  for row in "${seal_rows[@]}"; do
    label=${row%|*} wall=${row#*|}
    base=$sigil_each
    [[ $label == *"one process per file" ]] || base=$sigil_one
    printf '%-44s %6d %10.2f %14.3f %7.1f\n' "$label" "$files" "$wall" \
      "$(calc "$wall * 1000 / $files")" "$(calc "$wall / $base")"
  done
  echo "ratio: wall / sigil seal's wall in the same mode (one process per file, or one process)"
fi
