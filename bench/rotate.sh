#!/usr/bin/env bash
# Rotation at scale: one remote key mirrored by N ExternalSecrets in N
# namespaces (one ClusterSecretStore, as a cluster shares a database password), each
# Secret consumed by one Deployment (env valueFrom); R Rotations of the key one after
# another, each created in the next namespace and awaited until Completed. Watches on the
# mirror Secrets, the ReplicaSets, the Deployments and the Rotations time each one from
# the moment its create returned (Rotation status has only second precision): until
# every mirror holds a value other than before, until every Deployment has a ReplicaSet
# whose pod template carries this Rotation's sigil.dev/restarted-for, until every such
# rollout is complete (kubectl rollout status: every replica updated and available, no
# old one left), and until the phase is Completed (after await-rollout).
# Prints p50, p95 and max beside the target (mirrors: p50 <= 2 s) and where the time
# goes. Not a test: it prints and exits 0 whatever the numbers are.
#
# With --postgres, the incident end to end: the remote value is a PostgreSQL login
# (username and password) of the environment's PostgreSQL, every namespace has a
# RotationPolicy (AlternatingUsers) for its ExternalSecret, and each Rotation is also
# timed until the login in use before it is refused by PostgreSQL (a client logs in
# with it every 100 ms). Target: leaked password refused p50 <= 30 s with
# --max-concurrent-restarts 5. Defaults then: 10 Rotations.
#
# Usage: bench/rotate.sh [options] [-- extra sigil-controller flags]
#   -n N            namespaces, each with one ExternalSecret and one Deployment (default 50)
#   --rotations R   Rotations, one after another (default 20)
#   --provider P    vault (default): OpenBao KV v2, mount `secret`, AppRole login;
#                   aws: moto's Secrets Manager
#   --postgres      the end-to-end figure (see above)
#   --replicas K    replicas of every Deployment (default 2). kwok runs the pods on its
#                   fake nodes and makes them Ready, so a rollout completes as on a
#                   cluster whose images start at once: the numbers are Sigil's and the
#                   control plane's pace, not an application's start-up
#   --env E         private (default): a throwaway environment of its own (scripts/env up
#                   with SIGIL_ENV_DIR in a temporary directory, stopped at the end). The
#                   controller watches every namespace, so in the shared environment it
#                   would also reconcile (and fight over) other people's test objects.
#                   shared: the running environment (${SIGIL_ENV_DIR:-.env}, started if
#                   down).
# kube-controller-manager, kube-scheduler and kwok must run in the environment (the
# deployment controller makes the ReplicaSets, the scheduler and kwok run their pods).
# The controller (release build) runs with --rollout-deadline 1s unless the extra flags
# set it. Everything this run made (namespaces and all in them, the
# ClusterSecretStore, the remote key, the AppRole role) is removed at the end;
# BENCH_KEEP=1 keeps the temporary directory (controller log, audit lines) instead.
set -euo pipefail
n=50 rotations= provider=vault replicas=2 envmode=private postgres=0
while (($#)); do
  case $1 in
    -n) n=$2; shift 2 ;;
    --rotations) rotations=$2; shift 2 ;;
    --provider) provider=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --postgres) postgres=1; shift ;;
    --env) envmode=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
rotations=${rotations:-$((postgres ? 10 : 20))}
for v in "$n" "$rotations"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench: -n and --rotations are whole numbers > 0" >&2; exit 2; }
done
[[ $replicas =~ ^[0-9]+$ ]] || { echo "bench: --replicas is a whole number" >&2; exit 2; }
[[ $provider == vault || $provider == aws ]] || { echo "bench: --provider is vault or aws" >&2; exit 2; }
[[ $envmode == private || $envmode == shared ]] || { echo "bench: --env is private or shared" >&2; exit 2; }
flags=("$@")
[[ " ${flags[*]} " == *" --rollout-deadline"[=\ ]* ]] || flags=(--rollout-deadline 1s "${flags[@]}")

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
bench_build
bench_init
bench_env
if [[ -z ${SIGIL_KCM_URL:-} ]] || ! curl -sf --cacert "$SIGIL_KUBE_CA_FILE" "$SIGIL_KCM_URL/healthz" >/dev/null; then
  echo "bench: kube-controller-manager does not answer (${SIGIL_KCM_URL:-no SIGIL_KCM_URL in $SIGIL_ENV_DIR/env}):" \
    "without its deployment controller no Deployment gets a ReplicaSet; see scripts/env status" >&2
  exit 1
fi
export BENCH_N=$n BENCH_ROTATIONS=$rotations BENCH_PROVIDER=$provider BENCH_REPLICAS=$replicas \
  BENCH_FLAGS="${flags[*]}" BENCH_POSTGRES=$postgres
bench_pylib

cat >"$work/bench.py" <<'PY'
"""bench/rotate.sh's client side: setup, the Rotations and the watches that time them,
the table and cleanup."""
import base64
import http.client
import json
import math
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter

from benchlib import (E, LABEL, RUN, SELECTOR, alive, approle_role, apply_crds, aws, cleanup,
                      create_namespaces, credentials, kube, load_state, metric, metrics, par,
                      provider_spec, save_state, vault, wait_ready)

N, R, PROVIDER, REPLICAS = int(E["BENCH_N"]), int(E["BENCH_ROTATIONS"]), E["BENCH_PROVIDER"], int(E["BENCH_REPLICAS"])
CTL_NS = f"bench-rotate-{RUN}"
NAMESPACES = [f"{CTL_NS}-{i:0{len(str(N - 1))}d}" for i in range(N)]
ROLE = f"sigil-bench-{RUN}"
AKID = f"bench-{RUN}"
KEY = f"bench/{RUN}/db"
STORE = f"bench-rotate-{RUN}"
ES = "db"  # the ExternalSecret in every namespace, and the Secret it writes
APP = "app"  # the Deployment in every namespace
TARGET = 2.0  # p50 of created -> every mirror updated, seconds
PG = E.get("BENCH_POSTGRES") == "1"
PG_ROLE = f"sigil_bench_{RUN}".replace("-", "_")
PG_TARGET = 30.0  # p50 of created -> leaked password refused, seconds
PHASES = (("Staged", "Set", "Tested", "Promoted", "Propagated", "Restarted", "RolledOut", "Retired", "Completed")
          if PG else ("Staged", "Promoted", "Propagated", "Restarted", "RolledOut", "Completed"))


def pg_login(user, password, sql="select 1"):
    """Whether `user` / `password` logs in to the environment's PostgreSQL and runs `sql`."""
    env = dict(E, PGPASSWORD=password, PGCONNECT_TIMEOUT="5")
    done = subprocess.run([f"{E['SIGIL_POSTGRES_BIN']}/psql", "-h", E["SIGIL_POSTGRES_HOST"], "-p",
                           E["SIGIL_POSTGRES_PORT"], "-U", user, "-d", "postgres", "-Atc", sql],
                          env=env, capture_output=True)
    return done.returncode == 0


def pg_admin(sql):
    if not pg_login(E["SIGIL_POSTGRES_USER"], E["SIGIL_POSTGRES_PASSWORD"], sql):
        sys.exit(f"bench: PostgreSQL refused: {sql}")


# ---------------------------------------------------------------------------- setup

def setup():
    state = {}
    role_id = secret_id = ""
    if PROVIDER == "vault":
        role_id, secret_id = approle_role(state, ROLE)
    state["keys"] = [KEY]
    save_state(state)
    value = {"username": PG_ROLE if PG else "app", "password": secrets.token_hex(12)}
    if PG:
        state["roles"] = [PG_ROLE, f"{PG_ROLE}_clone"]
        save_state(state)
        pg_admin(f"CREATE ROLE \"{PG_ROLE}\" LOGIN PASSWORD '{value['password']}'")
    if PROVIDER == "vault":
        vault.call("POST", f"/v1/secret/data/{KEY}", {"data": value})
    else:
        aws("CreateSecret", {"Name": KEY, "SecretString": json.dumps(value)})
    apply_crds()
    create_namespaces(state, [CTL_NS] + NAMESPACES)
    credentials(CTL_NS, secret_id, AKID)
    state["cluster_stores"] = [STORE]
    save_state(state)
    kube.call("POST", "/apis/sigil.dev/v1/clustersecretstores",
              {"apiVersion": "sigil.dev/v1", "kind": "ClusterSecretStore",
               "metadata": {"name": STORE, "labels": {LABEL: RUN}},
               "spec": {"provider": provider_spec(PROVIDER, role_id, CTL_NS),
                        "conditions": [{"namespaces": NAMESPACES}]}})


def owner(obj):
    """The name of the Deployment that owns a ReplicaSet."""
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r["name"] for r in refs if r["kind"] == "Deployment"), None)


def create():
    """Every ExternalSecret and Deployment; then waits until all are synced and every
    Deployment has its first ReplicaSet."""
    def one(ns):
        kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{ns}/externalsecrets",
                  {"apiVersion": "sigil.dev/v1", "kind": "ExternalSecret",
                   "metadata": {"name": ES, "labels": {LABEL: RUN}},
                   "spec": {"refreshInterval": "1h",
                            "secretStoreRef": {"name": STORE, "kind": "ClusterSecretStore"},
                            "target": {"template": {"metadata": {"labels": {LABEL: RUN}}}},
                            "data": [{"secretKey": "password", "remoteRef": {"key": KEY, "property": "password"}},
                                     {"secretKey": "username", "remoteRef": {"key": KEY, "property": "username"}}]}})
        if PG:
            kube.call("POST", f"/api/v1/namespaces/{ns}/secrets",
                      {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-admin", "labels": {LABEL: RUN}},
                       "stringData": {"username": E["SIGIL_POSTGRES_USER"], "password": E["SIGIL_POSTGRES_PASSWORD"]}})
            kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{ns}/rotationpolicies",
                      {"apiVersion": "sigil.dev/v1", "kind": "RotationPolicy",
                       "metadata": {"name": "db", "labels": {LABEL: RUN}},
                       "spec": {"externalSecretRef": {"name": ES, "secretKey": "password"},
                                "postgres": {"host": E["SIGIL_POSTGRES_HOST"], "port": int(E["SIGIL_POSTGRES_PORT"]),
                                             "database": "postgres", "sslMode": "disable",
                                             "adminSecretRef": {"name": "pg-admin"},
                                             "strategy": "AlternatingUsers"}}})
        env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": ES, "key": "password"}}}]
        kube.call("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                  {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": APP, "labels": {LABEL: RUN}},
                   "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": APP}},
                            "template": {"metadata": {"labels": {"app": APP, LABEL: RUN}},
                                         "spec": {"containers": [{"name": APP, "image": "example.invalid/app:1",
                                                                  "env": env}]}}}})

    par(one, NAMESPACES)
    wait_ready("/apis/sigil.dev/v1/externalsecrets", N, "ExternalSecrets", timeout=180)
    deadline = time.time() + 120
    while True:
        items = kube.json("GET", f"/apis/apps/v1/replicasets?{SELECTOR}")["items"]
        have = {o["metadata"]["namespace"] for o in items if owner(o) == APP}
        if len(have) >= N:
            return
        if time.time() > deadline:
            sys.exit(f"bench: only {len(have)} of {N} Deployments have a ReplicaSet after 120s: is "
                     f"kube-controller-manager's deployment controller running? (log: {E.get('SIGIL_KCM_LOG')})")
        time.sleep(0.5)


# ---------------------------------------------------------------------------- watching

class Follow(threading.Thread):
    """Lists, then watches, this run's objects of one collection; hands each object seen
    to `seen(t, obj)`, t being the moment it arrived here."""

    def __init__(self, path, seen):
        super().__init__(daemon=True)
        self.path, self.seen, self.error = path, seen, None
        self.listed = threading.Event()

    def run(self):
        rv, failures = None, 0
        while True:
            try:
                if rv is None:
                    items = kube.json("GET", f"{self.path}?{SELECTOR}")
                    t = time.time()
                    for obj in items["items"]:
                        self.seen(t, obj)
                    rv = items["metadata"]["resourceVersion"]
                    self.listed.set()
                # Ends before the client's 60 s read timeout; then watches on from rv.
                path = f"{self.path}?{SELECTOR}&watch=1&allowWatchBookmarks=true&timeoutSeconds=45&resourceVersion={rv}"
                for t, line in kube.lines(path):
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # 410 Gone: list again
                        rv = None
                        break
                    rv = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.seen(t, event["object"])
                failures = 0
            except (OSError, http.client.HTTPException) as err:  # a dropped connection: watch on
                failures += 1
                if failures > 5:
                    self.error = f"watch {self.path}: {err}"
                    self.listed.set()
                    return
                time.sleep(0.2)
            except Exception as err:  # reported by the main thread
                self.error = f"watch {self.path}: {err}"
                self.listed.set()
                return


def restarted_for(obj):
    """The pod template's sigil.dev/restarted-for of a Deployment or ReplicaSet."""
    template = (obj.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get("sigil.dev/restarted-for")


class Seen:
    """What the watches saw: each mirror's values in order with when (values stay here,
    never printed), the first sighting of each ReplicaSet, of each Deployment with a
    restarted-for value (patched) and with its status caught up with that patch, and of
    each Rotation phase."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}  # namespace -> [(t, data.password)]
        self.replicasets = {}  # uid -> (t, namespace, sigil.dev/restarted-for)
        self.patched = {}  # (namespace, restarted-for) -> t
        self.observed = {}  # (namespace, restarted-for) -> t: status.observedGeneration caught up
        self.complete = {}  # (namespace, restarted-for) -> t: the rollout complete
        self.phases = {}  # Rotation name -> {phase: t}
        self.status = {}  # Rotation name -> last status

    def secret(self, t, obj):
        ns = obj["metadata"]["namespace"]
        if obj["metadata"]["name"] != ES or ns not in NAMESPACES:
            return
        data = obj.get("data") or {}
        value = (data.get("username"), data.get("password"))
        with self.lock:
            log = self.values.setdefault(ns, [])
            if not log or log[-1][1] != value:
                log.append((t, value))

    def replicaset(self, t, obj):
        meta = obj["metadata"]
        if owner(obj) != APP:
            return
        with self.lock:
            self.replicasets.setdefault(meta["uid"], (t, meta["namespace"], restarted_for(obj)))

    def deployment(self, t, obj):
        meta, cause = obj["metadata"], restarted_for(obj)
        if meta["name"] != APP or cause is None:
            return
        with self.lock:
            self.patched.setdefault((meta["namespace"], cause), t)
            status = obj.get("status") or {}
            if status.get("observedGeneration", 0) >= meta.get("generation", 0):
                self.observed.setdefault((meta["namespace"], cause), t)
                wanted = (obj.get("spec") or {}).get("replicas", 1)
                if all(status.get(f, 0) == wanted for f in ("replicas", "updatedReplicas", "availableReplicas")):
                    self.complete.setdefault((meta["namespace"], cause), t)

    def rotation(self, t, obj):
        name, status = obj["metadata"]["name"], obj.get("status") or {}
        with self.lock:
            self.status[name] = status
            if status.get("phase"):
                self.phases.setdefault(name, {}).setdefault(status["phase"], t)


def flag(name, default):
    """The value of a controller flag as this run passes it, or its default."""
    words = E["BENCH_FLAGS"].replace("=", " ").split()
    return words[words.index(name) + 1] if name in words[:-1] else default


def percentile(values, q):
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


# ---------------------------------------------------------------------------- measuring

def measure(pid):
    seen = Seen()
    follows = [Follow("/api/v1/secrets", seen.secret), Follow("/apis/apps/v1/replicasets", seen.replicaset),
               Follow("/apis/apps/v1/deployments", seen.deployment), Follow("/apis/sigil.dev/v1/rotations", seen.rotation)]
    for f in follows:
        f.start()
    for f in follows:
        f.listed.wait()

    def check(what, since):
        for f in follows:
            if f.error:
                sys.exit(f"bench: {f.error}")
        if not alive(pid):
            sys.exit(f"bench: the controller exited while waiting for {what}")
        if time.time() - since > 420:  # the propagation timeout (5m) and then some
            sys.exit(f"bench: {what}: not after {time.time() - since:.0f}s")

    with open("/proc/loadavg") as f:
        load0 = f.read().split()[0]
    m0 = metrics()
    rows = []
    for i in range(R):
        ns, name = NAMESPACES[i % N], f"rotation-{i:03d}"
        with seen.lock:
            before = {k: (len(log), log[-1][1]) for k, log in seen.values.items()}
        if len(before) < N:
            sys.exit(f"bench: the watch sees {len(before)} of {N} mirror Secrets")
        refused = {}
        if PG:
            # The login every mirror holds now: the one this Rotation must retire.
            leaked = next(iter(before.values()))[1]
            user, password = (base64.b64decode(v).decode() for v in leaked)
            if not pg_login(user, password):
                sys.exit(f"bench: the login the mirrors hold ({user}) does not work before {name}")

            def watch_refusal(user=user, password=password, out=refused):
                while pg_login(user, password):
                    time.sleep(0.1)
                out["at"] = time.time()

            refusal = threading.Thread(target=watch_refusal, daemon=True)
        sent = time.time()
        kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{ns}/rotations",
                  {"apiVersion": "sigil.dev/v1", "kind": "Rotation",
                   "metadata": {"name": name, "labels": {LABEL: RUN}},
                   "spec": {"externalSecretRef": {"name": ES}, "reason": f"bench/rotate.sh run {RUN}"}})
        t0 = time.time()
        if PG:
            refusal.start()
        while not ({"Completed", "Failed"} & set(seen.phases.get(name, {}))):
            check(f"Rotation {ns}/{name} to finish", t0)
            time.sleep(0.02)
        with seen.lock:
            phases, status = dict(seen.phases[name]), seen.status[name]
        cause = f"{ns}/{name}@{status.get('newVersion')}"
        # The mirrors are updated by then; the ReplicaSets may still be on their way.
        grace = time.time() + (60 if "Completed" in phases else 5)
        while True:
            with seen.lock:
                changed = {k: next((t for t, v in log[before[k][0]:] if v != before[k][1]), None)
                           for k, log in seen.values.items()}
                rolled = {}
                for t, rs_ns, rs_cause in seen.replicasets.values():
                    if rs_cause == cause:
                        rolled[rs_ns] = min(t, rolled.get(rs_ns, t))
                patched = {k: t for (k, c), t in seen.patched.items() if c == cause}
                observed = {k: t for (k, c), t in seen.observed.items() if c == cause}
                complete = {k: t for (k, c), t in seen.complete.items() if c == cause}
            if (sum(v is not None for v in changed.values()) >= N and len(rolled) >= N
                    and len(observed) >= N and len(complete) >= N) or time.time() > grace:
                break
            check(f"Rotation {ns}/{name}: mirrors and ReplicaSets", t0)
            time.sleep(0.02)
        mirrors = [t for t in changed.values() if t is not None]
        row = {"name": f"{ns}/{name}", "create": t0 - sent,
               "phases": {p: t - t0 for p, t in phases.items()},
               "first_mirror": min(mirrors) - t0 if mirrors else None,
               "mirrors": max(mirrors) - t0 if len(mirrors) >= N else None,
               "first_rs": min(rolled.values()) - t0 if rolled else None,
               "replicasets": max(rolled.values()) - t0 if len(rolled) >= N else None,
               "first_patch": min(patched.values()) - t0 if patched else None,
               "patches": max(patched.values()) - t0 if len(patched) >= N else None,
               "patch_to_rs": [rolled[k] - patched[k] for k in patched if k in rolled],
               "patch_to_observed": [observed[k] - patched[k] for k in patched if k in observed],
               "rollouts": max(complete.values()) - t0 if len(complete) >= N else None,
               "patch_to_complete": [complete[k] - patched[k] for k in patched if k in complete],
               "refused": None,
               "failed": None if "Completed" in phases else
               next((c.get("message") for c in status.get("conditions", []) if c["type"] == "Ready"), "?")}
        if PG and "Completed" in phases:
            refusal.join(timeout=30)
            row["refused"] = refused["at"] - t0 if "at" in refused else None
        rows.append(row)
        print(f"bench: {i + 1}/{R} {row['name']}: mirrors {fmt(row['mirrors'])} s, ReplicaSets "
              f"{fmt(row['replicasets'])} s, {'Completed' if row['failed'] is None else 'FAILED'} "
              f"{fmt(row['phases'].get('Completed'))} s", file=sys.stderr)
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[0]
    report(rows, m0, metrics(), (load0, load1))


# ---------------------------------------------------------------------------- the table

def report(rows, m0, m1, load):
    def stats(values):
        got = [v for v in values if v is not None]
        if not got:
            return None, None, None, 0
        return percentile(got, 0.5), percentile(got, 0.95), max(got), len(got)

    def d(name, **labels):
        return metric(m1, name, **labels) - metric(m0, name, **labels)

    where = (f"OpenBao KV v2 secret/{KEY}" if PROVIDER == "vault" else f"moto Secrets Manager {KEY}")
    print(f"sigil bench/rotate.sh  run {RUN}  env {E['BENCH_ENV']}  provider {PROVIDER}  "
          f"load average {load[0]} -> {load[1]} ({E.get('BENCH_CPUS', '?')} CPUs)")
    print(f"  1 remote key ({where}, property password) mirrored by {N} ExternalSecrets (refreshInterval 1h) in "
          f"{N} namespaces through 1 ClusterSecretStore; each Secret consumed by 1 Deployment "
          f"(replicas {REPLICAS}, env valueFrom)")
    print(f"  {R} Rotations one after another, each in the next namespace, the next one created once the last "
          f"was Completed; times from the moment the create returned (client side, watches)")
    print()
    if PG:
        print(f"  the value is a PostgreSQL login; a RotationPolicy (AlternatingUsers) per namespace: set and test "
              f"on the unused role, retire the one in use after every rollout")
        print()
    lines = [("created -> every mirror Secret updated", [r["mirrors"] for r in rows], TARGET),
             ("created -> every Deployment has a new ReplicaSet", [r["replicasets"] for r in rows], None),
             ("created -> every rollout complete", [r["rollouts"] for r in rows], None),
             ("created -> Rotation phase Completed", [r["phases"].get("Completed") for r in rows], None)]
    if PG:
        lines.append(("created -> leaked password refused", [r["refused"] for r in rows], PG_TARGET))
    print(f"{'metric (seconds)':50}{'p50':>7}{'p95':>7}{'max':>7}  {'target':<10}verdict")
    for label, values, target in lines:
        p50, p95, mx, got = stats(values)
        verdict = "" if target is None else ("MISSED" if p50 is None or p50 > target or got < R else "ok")
        shown = f"p50 <= {target:g}" if target is not None else ""
        print(f"{label:50}{fmt(p50):>7}{fmt(p95):>7}{fmt(mx):>7}  {shown:<10}{verdict}"
              + (f"  (only {got} of {R} rotations got there)" if got < R else ""))
    if PG:
        print("anchor: AWS rotation Lambda (multi-user) + ESO (refreshInterval 1h, the default) + Reloader: the mirrors "
              "take the new login 0-3600 s after finishSecret (p50 ~1800 s), the pods roll when Reloader sees the "
              "Secret change, and the leaked login keeps working until the next rotation sets it again")
    failed = [r for r in rows if r["failed"] is not None]
    print(f"{'Rotations Failed':50}{len(failed):>7}{'':14}  {'0':<10}{'ok' if not failed else 'MISSED'}")
    for r in failed:
        print(f"  {r['name']}: {r['failed']}")
    print(f"(p95 by nearest rank: rank {max(1, math.ceil(0.95 * R))} of the {R} sorted)")
    print()
    print(f"Where the time goes: seconds from the create until the watch saw it, p50 / p95 / max of {R}")
    steps = [(f"phase {p}", [r["phases"].get(p) for r in rows]) for p in PHASES[:3]]
    steps[2:2] = [("first mirror Secret updated", [r["first_mirror"] for r in rows]),
                  ("every mirror Secret updated", [r["mirrors"] for r in rows])]
    steps += [("first Deployment patched (restarted-for)", [r["first_patch"] for r in rows]),
              ("every Deployment patched", [r["patches"] for r in rows]),
              ("phase Restarted", [r["phases"].get("Restarted") for r in rows]),
              ("first new ReplicaSet", [r["first_rs"] for r in rows]),
              ("every Deployment has a new ReplicaSet", [r["replicasets"] for r in rows]),
              ("every rollout complete", [r["rollouts"] for r in rows]),
              ("phase RolledOut", [r["phases"].get("RolledOut") for r in rows]),
              ("phase Completed", [r["phases"].get("Completed") for r in rows]),
              ("(the create request itself)", [r["create"] for r in rows])]
    for label, values in steps:
        p50, p95, mx, _ = stats(values)
        print(f"  {label:48}{fmt(p50):>7}{fmt(p95):>7}{fmt(mx):>7}")
    print(f"Each rollout on its own ({N} x {R}; kube-controller-manager's part):")
    for label, key in (("Deployment patched -> its new ReplicaSet", "patch_to_rs"),
                       ("Deployment patched -> status.observedGeneration", "patch_to_observed"),
                       ("Deployment patched -> rollout complete", "patch_to_complete")):
        p50, p95, mx, got = stats([v for r in rows for v in r[key]])
        print(f"  {label:48}{fmt(p50):>7}{fmt(p95):>7}{fmt(mx):>7}  ({got} rollouts)")
    print()
    rollouts = {k: d("sigil_rollouts_total", trigger="rotation", result=k)
                for k in ("rolled", "already_rolled", "gone", "error")}
    provider_calls = Counter()
    for n, l, v in m1:
        if n == "sigil_provider_requests_total":
            provider_calls[f"{l.get('provider')} {l.get('operation')}"] += v - metric(m0, n, **l)
    print("The controller's counters over the rotations: rollouts "
          + ", ".join(f"{k} {v:.0f}" for k, v in rollouts.items())
          + f"; syncs {d('sigil_sync_total', result='SecretSynced'):.0f}; provider requests per rotation: "
          + (", ".join(f"{k} {v / R:.1f}" for k, v in sorted(provider_calls.items()) if v) or "none"))
    slots, deadline = flag("--max-concurrent-restarts", "5"), flag("--rollout-deadline", "5m")
    print(f"Controller flags: {E['BENCH_FLAGS']}; so --max-concurrent-restarts {slots}, --rollout-deadline "
          f"{deadline}, --rotation-propagation-timeout {flag('--rotation-propagation-timeout', '5m')}")
    print(f"  Deployments have {REPLICAS} replica(s), run by kwok on fake nodes: a restart slot is freed when its "
          f"rollout completes or at --rollout-deadline ({deadline}), whichever comes first, and the Rotation completes "
          f"once every rollout has (await-rollout); '-> rollout complete' is the control plane's pace with up to "
          f"{N} rollouts in flight on {E.get('BENCH_CPUS', '?')} CPUs")


# ---------------------------------------------------------------------------- cleanup

def clean():
    state = load_state()
    paths = ["/apis/sigil.dev/v1/namespaces/{ns}/rotations", "/apis/sigil.dev/v1/namespaces/{ns}/externalsecrets",
             "/apis/apps/v1/namespaces/{ns}/deployments", "/apis/apps/v1/namespaces/{ns}/replicasets",
             "/api/v1/namespaces/{ns}/pods", "/api/v1/namespaces/{ns}/secrets",
             "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", "/api/v1/namespaces/{ns}/events"]
    paths.append("/apis/sigil.dev/v1/namespaces/{ns}/rotationpolicies")
    cleanup(state, paths, state.get("keys", []))
    for role in state.get("roles", []):
        pg_login(E["SIGIL_POSTGRES_USER"], E["SIGIL_POSTGRES_PASSWORD"], f"DROP ROLE IF EXISTS \"{role}\"")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup()
    elif cmd == "wait-store":
        wait_ready("/apis/sigil.dev/v1/clustersecretstores", 1, "stores")
    elif cmd == "create":
        create()
    elif cmd == "measure":
        measure(int(sys.argv[2]))
    elif cmd == "cleanup":
        clean()
PY

bench() { python3 "$work/bench.py" "$@"; }
echo "bench: run $run: remote key, namespaces, store ..." >&2
bench setup
bench_start_controller "bench-rotate-$run" "${flags[@]}"
bench_wait_ready
bench wait-store
echo "bench: $n ExternalSecrets and Deployments; waiting for the Secrets and the first ReplicaSets ..." >&2
bench create
echo "bench: $rotations Rotations, one after another ..." >&2
BENCH_CPUS=$(nproc) bench measure "$pid"
