# shellcheck shell=bash disable=SC2154  # root, envmode: set by the script that sources this
# What bench/sync.sh and bench/rotate.sh share; sourced, not run. Each of them runs a
# release-built sigil-controller against a test environment and drives it from a
# Python client side ($work/bench.py) that imports $work/benchlib.py, written here.
#
# A script sets `root` (the repository) and `envmode` (private or shared), then:
#   bench_build             release build (nice); sets `controller`
#   bench_init              `run`, `work` (a temporary directory), `port`; exports
#                           BENCH_RUN, BENCH_WORK, BENCH_ROOT, BENCH_PORT, BENCH_ENV; sets
#                           the EXIT trap bench_cleanup
#   bench_env               a private environment of its own (scripts/env up with
#                           SIGIL_ENV_DIR in $work/env, stopped at the end) or the shared
#                           one (started if down); exports its env file
#   bench_pylib             writes $work/benchlib.py (HTTP clients, state file, CRDs,
#                           AppRole role, store specs, Ready waits, metrics, cleanup)
#   bench_start_controller CONTROLLER_NAMESPACE FLAGS...
#                           starts the controller (every namespace watched, no leader
#                           election; log in $work/controller.log, the audit lines of
#                           Rotation steps in $work/audit.log); sets `pid`
#   bench_wait_ready        until the controller's /readyz answers
# bench_cleanup (on exit) stops the controller, shows the end of its log on failure,
# runs `bench.py cleanup`, stops a private environment and removes $work, unless
# BENCH_KEEP=1.
#
# For bench/api.sh (sigil-api under load):
#   bench_build_api         release build of sigil-api and sigil-controller (nice); sets
#                           `api` and `controller`
#   bench_oha               oha (an HTTP load generator from crates.io, OHA_VERSION) built
#                           once into ${SIGIL_CACHE:-~/.cache/sigil}/oha-<version>/ beside
#                           scripts/env's servers; sets `oha`
#   bench_start_api FLAGS...
#                           starts sigil-api on a free loopback port, plain HTTP, against
#                           the controller on $port (audit lines in $work/api-audit.log,
#                           log in $work/api.log); sets `api_pid`, `api_port`; exports
#                           BENCH_API_PORT; bench_cleanup stops it and shows its log on
#                           failure
#   bench_wait_api          until its /readyz answers

bench_build() {
  nice -n 10 cargo build --quiet --release --locked -p sigil-controller --manifest-path "$root/Cargo.toml"
  controller=$root/target/release/sigil-controller
}

bench_init() {
  run=$(date +%s)-$$
  work=$(mktemp -d)
  pid=
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export BENCH_RUN=$run BENCH_WORK=$work BENCH_ROOT=$root BENCH_PORT=$port BENCH_ENV=$envmode
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local rc=$?
  if [[ -n ${api_pid:-} ]]; then
    kill "$api_pid" 2>/dev/null || true
    wait "$api_pid" 2>/dev/null || true
  fi
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if ((rc != 0)) && [[ -f $work/controller.log ]]; then
    echo "bench: failed; last lines of the controller's log:" >&2
    tail -n 15 "$work/controller.log" >&2 || true
  fi
  if ((rc != 0)) && [[ -f $work/api.log ]]; then
    echo "bench: failed; last lines of sigil-api's log:" >&2
    tail -n 15 "$work/api.log" >&2 || true
  fi
  # Every object is deleted explicitly (then its namespace), the remote keys after them.
  if [[ -n ${SIGIL_KUBE_SERVER:-} && -f $work/bench.py ]]; then
    python3 "$work/bench.py" cleanup || echo "bench: cleanup was incomplete (see above)" >&2
  fi
  if [[ $envmode == private && -d $work/env ]]; then
    SIGIL_ENV_DIR=$work/env "$root/scripts/env" down >/dev/null 2>&1 || true
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}

bench_env() {
  local envfile
  if [[ $envmode == private ]]; then
    echo "bench: starting a private environment in $work/env ..." >&2
    # Moto's recorder (started later through /moto-api/) writes here, not into a cwd.
    (cd "$work" && SIGIL_ENV_DIR=$work/env MOTO_RECORDER_FILEPATH=$work/env/moto_recording \
      "$root/scripts/env" up --until-exit $$ 2>"$work/env-up.log") ||
      { cat "$work/env-up.log" >&2; exit 1; }
    envfile=$work/env/env
  else
    "$root/scripts/env" status >/dev/null 2>&1 || "$root/scripts/env" up
    envfile=${SIGIL_ENV_DIR:-$root/.env}/env
    echo "bench: shared environment: this controller also reconciles every other Sigil object in the cluster" >&2
  fi
  set -a
  # shellcheck disable=SC1090
  source "$envfile"
  set +a
}

bench_start_controller() {
  local namespace=$1
  shift
  # Its own namespace for keys, rotation locks (and the Lease, were it on).
  "$controller" --namespace "$namespace" --http-addr "127.0.0.1:$port" \
    --leader-election false "$@" >"$work/audit.log" 2>"$work/controller.log" &
  pid=$!
}

bench_wait_ready() {
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || exit 1
    sleep 0.1
  done
}

# The load generator of bench/api.sh; pinned here, cached like scripts/env's servers.
OHA_VERSION=1.16.0

bench_build_api() {
  nice -n 10 cargo build --quiet --release --locked -p sigil-api -p sigil-controller \
    --manifest-path "$root/Cargo.toml"
  controller=$root/target/release/sigil-controller
  api=$root/target/release/sigil-api
}

bench_oha() {
  local cache=${SIGIL_CACHE:-$HOME/.cache/sigil}
  local dir=$cache/oha-$OHA_VERSION
  oha=$dir/bin/oha
  [[ -x $oha ]] && return
  mkdir -p "$dir"
  # scripts/env's lock: one install into the cache at a time. Its own target directory,
  # removed afterwards; the default features (rustls) are needed to build at all.
  (
    flock 9
    [[ -x $oha ]] && exit 0
    echo "bench: building oha $OHA_VERSION into $dir (once; about 10 minutes on 2 cores) ..." >&2
    local target
    target=$(mktemp -d)
    if ! CARGO_TARGET_DIR=$target nice -n 10 cargo install --locked --root "$dir" \
        --version "$OHA_VERSION" oha >"$dir.build.log" 2>&1; then
      tail -n 20 "$dir.build.log" >&2
      rm -rf "$target"
      echo "bench: cargo install oha $OHA_VERSION failed; see $dir.build.log" >&2
      exit 1
    fi
    rm -rf "$target"
  ) 9>"$cache/.install.lock"
}

bench_start_api() {
  api_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export BENCH_API_PORT=$api_port
  "$api" --listen "127.0.0.1:$api_port" --insecure-http --controller-url "http://127.0.0.1:$port" \
    "$@" >"$work/api-audit.log" 2>"$work/api.log" &
  api_pid=$!
}

bench_wait_api() {
  until curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null; do
    kill -0 "$api_pid" 2>/dev/null || exit 1
    sleep 0.1
  done
}

bench_pylib() {
  cat >"$work/benchlib.py" <<'PY'
"""What the benchmarks' client sides share: keep-alive JSON over HTTP to the apiserver,
OpenBao, moto and the controller; the run's state file (what to clean up); CRDs; an
AppRole role and store specs; waiting for Ready; the controller's metrics; cleanup."""
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

E = os.environ
RUN, WORK, ROOT, PORT = E["BENCH_RUN"], E["BENCH_WORK"], E["BENCH_ROOT"], int(E["BENCH_PORT"])
STATE = os.path.join(WORK, "state.json")
LABEL = "sigil.dev/bench"
SELECTOR = f"labelSelector={LABEL}%3D{RUN}"
WORKERS = 16  # parallel create requests


class Http:
    """Keep-alive JSON over HTTP(S), one connection per thread."""

    def __init__(self, base, headers, cafile=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.https = u.hostname, u.port, u.scheme == "https"
        self.ctx = ssl.create_default_context(cafile=cafile) if self.https else None
        self.headers, self.local = headers, threading.local()

    def _conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            if self.https:
                c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            else:
                c = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.local.c = c
        return c

    def call(self, method, path, body=None, headers=None, ok=(200, 201, 202, 204)):
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        h = dict(self.headers, **(headers or {}))
        for attempt in range(3):
            c = self._conn()
            try:
                c.request(method, path, body=data, headers=h)
                r = c.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.c = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        if ok is not None and r.status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {r.status}: {raw[:400].decode(errors='replace')}")
        return r.status, raw

    def json(self, method, path, body=None, **kw):
        _, raw = self.call(method, path, body, **kw)
        return json.loads(raw) if raw else None

    def lines(self, path):
        """A streaming GET (a watch): (arrival time, line) until the server ends it."""
        c = self._conn()
        try:
            c.request("GET", path, headers=self.headers)
            r = c.getresponse()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status}: {r.read()[:400].decode(errors='replace')}")
            while line := r.readline():
                yield time.time(), line
        except BaseException:
            c.close()
            self.local.c = None
            raise


kube = Http(E["SIGIL_KUBE_SERVER"], {"Authorization": f"Bearer {E['SIGIL_KUBE_ADMIN_TOKEN']}",
            "Content-Type": "application/json", "Accept": "application/json"}, E["SIGIL_KUBE_CA_FILE"])
vault = Http(E["VAULT_ADDR"], {"X-Vault-Token": E["VAULT_TOKEN"], "Content-Type": "application/json"})
moto = Http(E["AWS_ENDPOINT_URL"], {})
ctl = Http(f"http://127.0.0.1:{PORT}", {})


def aws(op, body, ok=(200,)):
    """One Secrets Manager call to moto (which does not check signatures), as `testing`."""
    headers = {"X-Amz-Target": f"secretsmanager.{op}", "Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Date": "20260101T000000Z",
               "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/"
                                "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64}
    return moto.call("POST", "/", body, headers=headers, ok=ok)


def load_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_state(state):
    with open(STATE + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(STATE + ".tmp", STATE)


def par(fn, items):
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(fn, items))


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except OSError:
        return False


def apply_crds():
    folder = os.path.join(ROOT, "charts/sigil/crds")
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        import yaml
    except ImportError:
        kubectl = os.environ.get("SIGIL_KUBECTL", "kubectl")
        subprocess.run([kubectl, "apply", "--server-side", "-f", folder], check=True, stdout=subprocess.DEVNULL)
        docs = [{"metadata": {"name": f"{p}.sigil.dev"}} for p in
                ("sealedsecrets", "secretstores", "clustersecretstores", "externalsecrets", "rotations")]
    else:
        docs = []
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name)) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:  # created when missing; never changed (a shared env has them)
            status, _ = kube.call("GET", f"{base}/{doc['metadata']['name']}", ok=None)
            if status == 404:
                kube.call("POST", base, doc, ok=(201, 409))
    for doc in docs:
        deadline = time.time() + 30
        while True:
            crd = kube.json("GET", f"{base}/{doc['metadata']['name']}")
            conds = (crd.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                break
            if time.time() > deadline:
                sys.exit(f"bench: CRD {doc['metadata']['name']} not Established after 30s")
            time.sleep(0.2)


def approle_role(state, role):
    """An AppRole role of the run's own (recorded in the state file for cleanup), so that
    its requests carry auth.metadata.role_name in OpenBao's audit log; returns
    (role_id, secret_id)."""
    vault.call("POST", f"/v1/auth/approle/role/{role}",
               {"token_policies": "sigil-test", "token_ttl": "1h", "secret_id_ttl": 0})
    state["role"] = role
    save_state(state)
    role_id = vault.json("GET", f"/v1/auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = vault.json("POST", f"/v1/auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
    return role_id, secret_id


def create_namespaces(state, names):
    state["namespaces"] = state.get("namespaces", []) + list(names)
    save_state(state)
    par(lambda ns: kube.call("POST", "/api/v1/namespaces",
                             {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": ns, "labels": {LABEL: RUN}}}), names)


def credentials(ns, secret_id, akid):
    """Secrets `approle` (secret-id) and `aws` (id, key) in `ns`, which store specs refer to."""
    for name, data in (("approle", {"secret-id": secret_id}), ("aws", {"id": akid, "key": "testing"})):
        kube.call("POST", f"/api/v1/namespaces/{ns}/secrets",
                  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": {LABEL: RUN}},
                   "stringData": data})


def provider_spec(kind, role_id, ref_ns=None):
    """spec.provider of a store reading OpenBao's KV v2 mount `secret` (AppRole) or moto;
    `ref_ns`: the namespace of the credentials (ClusterSecretStores)."""
    ns = {"namespace": ref_ns} if ref_ns else {}
    if kind == "vault":
        return {"vault": {"server": E["VAULT_ADDR"], "path": "secret", "version": "v2",
                          "auth": {"appRole": {"path": "approle", "roleId": role_id,
                                               "secretRef": {"name": "approle", "key": "secret-id", **ns}}}}}
    return {"aws": {"service": "SecretsManager", "region": "us-east-1", "endpoint": E["AWS_ENDPOINT_URL"],
                    "auth": {"secretRef": {"accessKeyIDSecretRef": {"name": "aws", "key": "id", **ns},
                                           "secretAccessKeySecretRef": {"name": "aws", "key": "key", **ns}}}}}


def wait_ready(path, want, what, timeout=120):
    """Until `want` objects of this run at `path` (a collection) say Ready=True."""
    deadline = time.time() + timeout
    while True:
        items = kube.json("GET", f"{path}?{SELECTOR}")["items"]
        ready = sum(1 for s in items for c in (s.get("status") or {}).get("conditions", [])
                    if c["type"] == "Ready" and c["status"] == "True")
        if ready >= want:
            return
        if time.time() > deadline:
            msgs = {c.get("message") for s in items for c in (s.get("status") or {}).get("conditions", [])}
            sys.exit(f"bench: only {ready} of {want} {what} Ready after {timeout}s: {msgs}")
        time.sleep(0.2)


LABELS_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metrics():
    try:
        _, raw = ctl.call("GET", "/metrics", ok=(200,))
    except (OSError, RuntimeError, http.client.HTTPException):
        return []
    out = []
    for line in raw.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        out.append((name, dict(LABELS_RE.findall(labels)), float(value)))
    return out


def metric(snap, name, **labels):
    return sum(v for n, l, v in snap if n == name and all(l.get(k) == w for k, w in labels.items()))


def cleanup(state, paths, keys, extra=()):
    """Removes what `state` records: in each namespace the collections `paths` (with
    `{ns}`), then the namespace; the ClusterSecretStores; the remote `keys` at both
    providers; the AppRole role; then each (what, fn, args) of `extra`. Goes on past a
    failure and exits 1 if there was one."""
    problems = []

    def attempt(what, fn, *args):
        try:
            fn(*args)
        except Exception as err:  # keep going: remove as much as possible
            problems.append(f"{what}: {err}")

    gone = (200, 202, 404)
    for ns in state.get("namespaces", []):
        for path in paths:
            attempt(path.format(ns=ns), kube.call, "DELETE", path.format(ns=ns), None, None, gone)
        attempt(ns, kube.call, "DELETE", f"/api/v1/namespaces/{ns}", None, None, gone)
    for name in state.get("cluster_stores", []):
        attempt(name, kube.call, "DELETE", f"/apis/sigil.dev/v1/clustersecretstores/{name}", None, None, gone)

    def drop(key):
        vault.call("DELETE", f"/v1/secret/metadata/{key}", ok=(200, 204, 404))
        aws("DeleteSecret", {"SecretId": key, "ForceDeleteWithoutRecovery": True}, ok=(200, 400))

    if keys:
        attempt("remote keys", par, drop, keys)
    if state.get("role"):
        attempt("AppRole role", vault.call, "DELETE", f"/v1/auth/approle/role/{state['role']}", None, None,
                (200, 204, 404))
    for what, fn, *args in extra:
        attempt(what, fn, *args)
    for p in problems:
        print(f"bench: cleanup: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)
PY
}
