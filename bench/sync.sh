#!/usr/bin/env bash
# ExternalSecret sync at scale: N ExternalSecrets in M namespaces over
# K + K remote keys (OpenBao KV v2 mount `secret`, moto Secrets Manager), created at once.
# Prints a table: time to the first full sync, provider calls per refresh interval as the
# servers count them (OpenBao's audit log; moto's request recorder, which keeps the
# X-Amz-Target of every call), logins, the controller's read cache and peak RSS, each
# beside its target. Not a test: it prints and exits 0 whatever the numbers are.
#
# Usage: bench/sync.sh [options] [-- extra sigil-controller flags, e.g. --concurrency 64]
#   -n N            ExternalSecrets (default 1000): per namespace half Vault, half AWS
#   --namespaces M  namespaces they are spread over (default 10)
#   --keys K        remote keys per provider (default 50); every key is used by N/(2K)
#                   ExternalSecrets, one per namespace when N/M = 2K
#   --interval S    refreshInterval in seconds (default 60, standing for 1h)
#   --intervals I   refresh intervals measured after the first full sync (default 3)
#   --layout L      cluster (default): one ClusterSecretStore per provider serves every
#                   namespace (credentials in the controller's namespace), so one read can
#                   serve all namespaces; namespaced: one SecretStore per provider in every
#                   namespace (sessions and the read cache are per store)
#   --find          the ExternalSecrets find their keys instead of naming them (default
#                   -n 100): every Vault one a `find` of the run's path and tag (its 50
#                   keys, each tagged in custom_metadata), every AWS one a `find` of the
#                   run's tag; prints the listings per store and interval, and Vault's
#                   metadata reads for the tags, beside the reads (target: <= 2 listings
#                   per store, <= 1.1 reads per key per interval)
#   --cold          create every object first, then start the controller and time from
#                   its start (default: the controller runs and its stores are Ready
#                   before the ExternalSecrets arrive; time from the first create)
#   --env E         private (default): a throwaway environment of its own (scripts/env up
#                   with SIGIL_ENV_DIR in a temporary directory, stopped at the end). The
#                   controller watches every namespace, so in the shared environment it
#                   would also reconcile (and fight over) other people's test objects.
#                   shared: the running environment (${SIGIL_ENV_DIR:-.env}, started if
#                   down); this run's calls are told apart by its own AppRole role and
#                   AWS access key id, and moto's recorder file is removed if it made it.
# Release build (cargo build --release --locked -p sigil-controller). Everything this run
# made (objects, stores, remote keys under bench/<run>/, the AppRole role) is removed at
# the end; BENCH_KEEP=1 keeps the temporary directory (logs) instead of removing it.
set -euo pipefail
n= namespaces=10 keys=50 interval=60 intervals=3 layout=cluster cold=0 envmode=private find=0
while (($#)); do
  case $1 in
    -n) n=$2; shift 2 ;;
    --namespaces) namespaces=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --intervals) intervals=$2; shift 2 ;;
    --layout) layout=$2; shift 2 ;;
    --cold) cold=1; shift ;;
    --find) find=1; shift ;;
    --env) envmode=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
n=${n:-$((find ? 100 : 1000))}
for v in "$n" "$namespaces" "$keys" "$interval" "$intervals"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench: counts and the interval are whole numbers > 0" >&2; exit 2; }
done
((n % (2 * namespaces) == 0)) || { echo "bench: -n must be a multiple of 2 x --namespaces" >&2; exit 2; }
[[ $layout == cluster || $layout == namespaced ]] || { echo "bench: --layout is cluster or namespaced" >&2; exit 2; }
[[ $envmode == private || $envmode == shared ]] || { echo "bench: --env is private or shared" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
bench_build
bench_init
bench_env
export BENCH_N=$n BENCH_NS=$namespaces BENCH_KEYS=$keys BENCH_INTERVAL=$interval \
  BENCH_INTERVALS=$intervals BENCH_LAYOUT=$layout BENCH_COLD=$cold BENCH_FLAGS="$*" BENCH_FIND=$find
bench_pylib

cat >"$work/bench.py" <<'PY'
"""The bench's client side: setup, the bulk create, counting, the table and cleanup."""
import base64
import json
import os
import re
import secrets
import sys
import time
from collections import Counter

from benchlib import (E, LABEL, RUN, SELECTOR, WORKERS, alive, approle_role, apply_crds, aws, cleanup,
                      create_namespaces, credentials, kube, load_state, metric, metrics, moto, par,
                      provider_spec, save_state, vault, wait_ready)

N, M, K = int(E["BENCH_N"]), int(E["BENCH_NS"]), int(E["BENCH_KEYS"])
T, I, LAYOUT = float(E["BENCH_INTERVAL"]), int(E["BENCH_INTERVALS"]), E["BENCH_LAYOUT"]
FIND = E.get("BENCH_FIND") == "1"
TAG = "sigil-bench"  # with --find, every AWS secret of the run carries TAG=RUN
CTL_NS = f"bench-sync-{RUN}"
NAMESPACES = [f"bench-sync-{RUN}-{i}" for i in range(M)]
ROLE = f"sigil-bench-{RUN}"
AKID = f"bench-{RUN}"  # the controller's AWS access key id: moto's recorder shows it
PREFIX = f"bench/{RUN}"
AUDIT = E["SIGIL_VAULT_AUDIT_LOG"]
MOTO_LOG = os.path.join(E["SIGIL_ENV_DIR"], "logs", "moto.log")


def key_name(k):
    return f"{PREFIX}/key-{k:0{len(str(K - 1))}d}"


def store_of(ns, provider):
    """(kind, namespace or '', name) of the store an ExternalSecret in `ns` uses."""
    if LAYOUT == "cluster":
        return ("ClusterSecretStore", "", f"bench-sync-{RUN}-{provider}")
    return ("SecretStore", ns, provider)


def externals():
    """(namespace, name, provider, key index) of every ExternalSecret."""
    per = N // M
    half = per // 2
    for i, ns in enumerate(NAMESPACES):
        for j in range(per):
            provider, h = ("vault", j) if j < half else ("aws", j - half)
            yield ns, f"es-{j}", provider, (i * half + h) % K


def pairs(provider):
    return {(store_of(ns, p), k) for ns, _, p, k in externals() if p == provider}


# ---------------------------------------------------------------------------- setup

def audit_device():
    """The name of the audit device writing SIGIL_VAULT_AUDIT_LOG (for sys/audit-hash)."""
    devices = vault.json("GET", "/v1/sys/audit")
    devices = devices.get("data", devices)
    for path, dev in devices.items():
        if isinstance(dev, dict) and (dev.get("options") or {}).get("file_path") == AUDIT:
            return path.rstrip("/")
    return None


def setup():
    state = {"t_setup": time.time(), "audit0": os.path.getsize(AUDIT)}
    # A role of this run's own: its role_id's audit HMAC tells its logins apart.
    role_id, secret_id = approle_role(state, ROLE)
    device = audit_device()
    if device:
        hashed = vault.json("POST", f"/v1/sys/audit-hash/{device}", {"input": role_id})
        state["role_id_hmac"] = (hashed.get("data") or hashed).get("hash")
    # The recorder keeps every request with its headers (X-Amz-Target, the access key).
    moto.call("POST", "/moto-api/recorder/start-recording", b"", ok=(200,))
    state["recording"] = True
    if E["BENCH_ENV"] == "shared":
        # The recorder writes into moto's working directory; remember whether the file was
        # there, so that cleanup removes it only if this run made it.
        try:
            with open(os.path.join(E["SIGIL_ENV_PID_FILE_DIR"], "moto")) as f:
                where = os.path.realpath(f"/proc/{f.read().strip()}/cwd/moto_recording")
            state["recording_file"] = None if os.path.exists(where) else where
        except OSError:
            state["recording_file"] = None
    save_state(state)

    def value(k):
        return {"username": f"user-{k}", "password": secrets.token_hex(12)}

    state["keys"] = True
    save_state(state)
    par(lambda k: vault.call("POST", f"/v1/secret/data/{key_name(k)}", {"data": value(k)}), range(K))
    if FIND:
        par(lambda k: vault.call("POST", f"/v1/secret/metadata/{key_name(k)}", {"custom_metadata": {TAG: RUN}}),
            range(K))
    tags = [{"Key": TAG, "Value": RUN}] if FIND else []
    par(lambda k: aws("CreateSecret", {"Name": key_name(k), "SecretString": json.dumps(value(k)), "Tags": tags}),
        range(K))

    apply_crds()
    labels = {LABEL: RUN}
    create_namespaces(state, [CTL_NS] + NAMESPACES)

    if LAYOUT == "cluster":
        credentials(CTL_NS, secret_id, AKID)
        state["cluster_stores"] = [store_of("", p)[2] for p in ("vault", "aws")]
        save_state(state)
        for p in ("vault", "aws"):
            kube.call("POST", "/apis/sigil.dev/v1/clustersecretstores",
                      {"apiVersion": "sigil.dev/v1", "kind": "ClusterSecretStore",
                       "metadata": {"name": store_of("", p)[2], "labels": labels},
                       "spec": {"provider": provider_spec(p, role_id, CTL_NS), "conditions": [{"namespaces": NAMESPACES}]}})
    else:
        def namespaced(ns):
            credentials(ns, secret_id, AKID)
            for p in ("vault", "aws"):
                kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{ns}/secretstores",
                          {"apiVersion": "sigil.dev/v1", "kind": "SecretStore",
                           "metadata": {"name": p, "labels": labels}, "spec": {"provider": provider_spec(p, role_id)}})
        par(namespaced, NAMESPACES)


def wait_stores():
    """Until every store of this run says Ready=True."""
    if LAYOUT == "cluster":
        wait_ready("/apis/sigil.dev/v1/clustersecretstores", 2, "stores")
    else:
        wait_ready("/apis/sigil.dev/v1/secretstores", 2 * M, "stores")


def create_es():
    """Every ExternalSecret at once ({WORKERS} requests in flight); returns the seconds it took."""
    interval = f"{int(T)}s"

    def create(es):
        ns, name, p, k = es
        kind, _, store = store_of(ns, p)
        kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{ns}/externalsecrets",
                  {"apiVersion": "sigil.dev/v1", "kind": "ExternalSecret",
                   "metadata": {"name": name, "labels": {LABEL: RUN}},
                   "spec": {"refreshInterval": interval, "secretStoreRef": {"name": store, "kind": kind}, **source(p, k)}})

    def source(p, k):
        if not FIND:
            return {"data": [{"secretKey": "password", "remoteRef": {"key": key_name(k), "property": "password"}}]}
        find = {"path": PREFIX, "tags": {TAG: RUN}}
        return {"dataFrom": [{"find": find}]}

    t = time.time()
    par(create, list(externals()))
    return time.time() - t


# ---------------------------------------------------------------------------- counting

def recording():
    status, raw = moto.call("GET", "/moto-api/recorder/download-recording", ok=None)
    return raw.decode(errors="replace").splitlines() if status == 200 else []


def moto_log_posts():
    try:
        with open(MOTO_LOG, errors="replace") as f:
            return sum(1 for line in f if '"POST / ' in line)
    except OSError:
        return 0


def snapshot():
    return {"t": time.time(), "audit": os.path.getsize(AUDIT), "rec": len(recording()),
            "moto_log": moto_log_posts(), "metrics": metrics()}


def vault_calls(start, end, state):
    """OpenBao's audit log between two offsets: this run's requests, by kind, and the
    KV reads per (remote key)."""
    kinds, per_key, pairs_read = Counter(), Counter(), set()
    read_prefix = f"secret/data/{PREFIX}/"
    with open(AUDIT, "rb") as f:
        f.seek(start)
        # A line belongs to the window its first byte was written in.
        pos = start
        for line in f:
            first, pos = pos, pos + len(line)
            if first >= end:
                break
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("type") != "request":
                continue
            req = entry.get("request") or {}
            path = req.get("path", "")
            mine = ((entry.get("auth") or {}).get("metadata") or {}).get("role_name") == ROLE
            if path.startswith("auth/") and path.endswith("/login"):
                # Attempts, failed ones included: the role_id as the audit device hashes it.
                if (req.get("data") or {}).get("role_id") == state.get("role_id_hmac"):
                    kinds["login"] += 1
                continue
            if path.startswith(read_prefix) and req.get("operation") == "read":
                kinds["read"] += 1
                per_key[path[len(read_prefix):]] += 1
                # Each store's session has its own token: its accessor stands for the store.
                pairs_read.add(((entry.get("auth") or {}).get("accessor"), path))
            elif mine and req.get("operation") == "list":
                kinds["list"] += 1
            elif mine and path.startswith("secret/metadata/") and req.get("operation") == "read":
                kinds["meta"] += 1
            elif mine:
                kinds[{"auth/token/renew-self": "renew", "auth/token/lookup-self": "check"}.get(path, "other")] += 1
    return kinds, per_key, pairs_read


def aws_calls(lines):
    """Moto's recording: this run's calls by operation, and how many secret ids they read."""
    ops, ids = Counter(), 0
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            ops["unparsed"] += 1
            continue
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        cred = re.search(r"Credential=([^/]+)/", headers.get("authorization", ""))
        if not cred or cred.group(1) != AKID:
            continue
        target = headers.get("x-amz-target", "")
        op = target.split(".", 1)[-1] if target else "other"
        ops[op] += 1
        if op == "GetSecretValue":
            ids += 1
        elif op == "BatchGetSecretValue":
            body = entry.get("body") or ""
            try:
                if entry.get("body_encoded"):
                    body = base64.b64decode(body)
                ids += len(json.loads(body).get("SecretIdList") or [])
            except ValueError:
                pass
    return ops, ids


def api_counts():
    """ExternalSecrets of this run with Ready=True, and the Secrets they wrote."""
    items = kube.json("GET", f"/apis/sigil.dev/v1/externalsecrets?{SELECTOR}")["items"]
    ready = sum(1 for o in items for c in (o.get("status") or {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True")
    wanted = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items}
    written = kube.json("GET", "/api/v1/secrets?labelSelector=sigil.dev%2Fexternal-secret")["items"]
    def holds(data):
        return len(data) == K if FIND else "password" in data

    have = sum(1 for s in written if (s["metadata"]["namespace"], s["metadata"]["name"]) in wanted
               and holds(s.get("data") or {}))
    return ready, have


def measure(pid, t0):
    state = load_state()
    snaps = []
    if t0 is None:  # warm: the controller runs; the objects arrive now
        snaps.append(("start", snapshot()))
        t0 = time.time()
        state["create_s"] = create_es()
    else:
        snaps.append(("start", state["cold_start_snapshot"]))
    deadline = t0 + max(300.0, 3 * T)
    while metric(metrics(), "sigil_sync_total", result="SecretSynced") < N:
        if not alive(pid):
            sys.exit("bench: the controller exited before the first full sync")
        if time.time() > deadline:
            snap = metrics()
            fails = {l["result"]: v for n, l, v in snap if n == "sigil_sync_total" and v}
            sys.exit(f"bench: first full sync not done after {deadline - t0:.0f}s; sync_total {fails}; "
                     f"API (Ready, Secrets) = {api_counts()}")
        time.sleep(0.1)
    t_sync = time.time()
    # The controller's counter may count an object twice; the API server decides.
    while api_counts() != (N, N):
        if time.time() > deadline:
            sys.exit(f"bench: API (Ready, Secrets) = {api_counts()}, want ({N}, {N})")
        time.sleep(0.5)
        t_sync = time.time()
    snaps.append(("first sync", snapshot()))
    for k in range(1, I + 1):
        while time.time() < t_sync + k * T:
            if not alive(pid):
                sys.exit(f"bench: the controller exited during interval {k}")
            time.sleep(min(1.0, max(0.0, t_sync + k * T - time.time())))
        snaps.append((f"interval {k}", snapshot()))
    with open(f"/proc/{pid}/status") as f:
        hwm_kib = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    end_counts = api_counts()
    report(state, t0, t_sync, snaps, hwm_kib, end_counts)


# ---------------------------------------------------------------------------- the table

def report(state, t0, t_sync, snaps, hwm_kib, end_counts):
    rec = recording()
    rows = []
    for (prev, a), (name, b) in zip(snaps, snaps[1:]):
        kinds, per_key, pairs_read = vault_calls(a["audit"], b["audit"], state)
        ops, ids = aws_calls(rec[a["rec"]:b["rec"]])
        def d(name_, a=a, b=b, **l):
            return metric(b["metrics"], name_, **l) - metric(a["metrics"], name_, **l)
        rows.append({"name": name, "prev": prev, "len": b["t"] - a["t"], "vault": kinds, "per_key": per_key, "pairs": len(pairs_read),
                     "aws": ops, "ids": ids,
                     "moto_log": b["moto_log"] - a["moto_log"], "d": d})
    window = rows[1:]
    nv, na = pairs("vault"), pairs("aws")
    stores_v = len({s for s, _ in nv})
    stores_a = len({s for s, _ in na})
    es_per_key = N // (2 * K)
    sync_s = t_sync - t0
    vault_reads = sum(r["vault"]["read"] for r in window) / I
    aws_total = sum(sum(r["aws"].values()) for r in window) / I
    per_key = vault_reads / K
    per_pair = vault_reads / len(nv)
    aws_per_50 = aws_total / (len(na) / 50)
    logins_run = vault_calls(state["audit0"], snaps[-1][1]["audit"], state)[0]["login"]
    worst_pairs = min(r["pairs"] for r in window)
    aws_ids = sum(r["ids"] for r in window) / I
    vault_lists = sum(r["vault"]["list"] for r in window) / I
    vault_meta = sum(r["vault"]["meta"] for r in window) / I
    aws_lists = sum(r["aws"]["ListSecrets"] for r in window) / I
    logins_window = sum(r["vault"]["login"] for r in window)
    rss = hwm_kib / 1024

    def failures(row):
        return sum(v for n, l, v in snaps_by_name[row["name"]] if n == "sigil_sync_total"
                   and l.get("result") != "SecretSynced") - sum(
            v for n, l, v in snaps_by_name[row["prev"]] if n == "sigil_sync_total"
            and l.get("result") != "SecretSynced")

    snaps_by_name = {name: snap["metrics"] for name, snap in snaps}
    failed_first = failures(rows[0])
    failed_window = sum(failures(r) for r in window)

    def verdict(value, limit):
        return "ok" if value <= limit else "MISSED"

    flags = E["BENCH_FLAGS"] or "(none)"
    how = ("cold: every object created first, timed from the controller's start" if E["BENCH_COLD"] == "1"
           else f"warm: controller running and stores Ready; timed from the first of the creates "
                f"({WORKERS} in flight, all sent in {state.get('create_s', 0):.1f} s)")
    layout = (f"cluster: 1 ClusterSecretStore per provider for all {M} namespaces" if LAYOUT == "cluster"
              else f"namespaced: 1 SecretStore per provider in each of the {M} namespaces")
    print(f"sigil bench/sync.sh  run {RUN}  env {E['BENCH_ENV']}  controller flags: {flags}")
    print(f"  {N} ExternalSecrets ({N // 2} Vault, {N // 2} AWS) in {M} namespaces over {K} + {K} remote keys; "
          f"each key used by {es_per_key} ExternalSecrets")
    print(f"  layout {layout}: {stores_v} + {stores_a} stores, {len(nv)} + {len(na)} (store, key) pairs, "
          f"{N // 2 // len(nv)} ExternalSecrets per pair")
    if FIND:
        print(f"  --find: every ExternalSecret finds all {K} keys of its provider (find.path {PREFIX} and tag "
              f"{TAG}={RUN}), so each key is used by {N // 2} ExternalSecrets")
    print(f"  refreshInterval {int(T)}s (standing for 1h); {I} intervals measured after the first full sync")
    print(f"  {how}")
    print()
    print(f"{'':44}{'measured':>10}  {'target':<9}")
    lines = [
        (f"first full sync, all {N} Ready (s)", f"{sync_s:.1f}", "<= 15", verdict(sync_s, 15)),
        ("Vault KV reads / remote key / interval", f"{per_key:.2f}",
         "<= 1.1" if LAYOUT == "cluster" else "", verdict(per_key, 1.1) if LAYOUT == "cluster" else ""),
        ("Vault KV reads / (store, key) / interval", f"{per_pair:.2f}",
         "<= 1.1" if LAYOUT != "cluster" else "", verdict(per_pair, 1.1) if LAYOUT != "cluster" else ""),
        ("Vault (store, key) read in the worst interval", f"{worst_pairs} of {len(nv)}", "all",
         "ok" if worst_pairs >= len(nv) else "MISSED"),
        (f"AWS calls / interval ({K} keys, {stores_a} store(s))", f"{aws_total:.1f}", "", ""),
        ("AWS calls / interval per 50 (store, key)", f"{aws_per_50:.1f}", "<= 10", verdict(aws_per_50, 10)),
        ("AWS secret ids read / interval", f"{aws_ids:.1f}", f"~{len(na)}", ""),
        ("Vault logins: whole run / in the intervals", f"{logins_run} / {logins_window}",
         f"{stores_v} / 0", "ok" if (logins_run, logins_window) == (stores_v, 0) else "MISSED"),
        ("controller peak RSS, VmHWM (MiB)", f"{rss:.1f}", "<= 64", verdict(rss, 64)),
    ] + ([
        (f"Vault LISTs / store / interval", f"{vault_lists / stores_v:.2f}", "<= 2",
         verdict(vault_lists / stores_v, 2)),
        (f"AWS ListSecrets / store / interval", f"{aws_lists / stores_a:.2f}", "<= 2",
         verdict(aws_lists / stores_a, 2)),
        ("Vault metadata reads (tags) / key / interval", f"{vault_meta / K:.2f}", "", ""),
    ] if FIND else []) + [
        ("failed syncs: first sync / in the intervals", f"{failed_first:.0f} / {failed_window:.0f}", "0 / 0",
         "ok" if failed_first + failed_window == 0 else "MISSED"),
    ]
    for label, value, target, ok in lines:
        print(f"{label:44}{value:>10}  {target:<9}{ok}")
    if LAYOUT == "cluster":
        print("(Vault target per remote key: one store per provider, so one read of a key can serve "
              "every ExternalSecret of it, in all namespaces)")
    else:
        print(f"(Vault target per (store, key): sessions and the read cache are per store, so a key used "
              f"through {len(nv) // K} stores is legitimately read by each; per remote key expect ~{len(nv) // K})")
    print()
    print("Provider calls counted by the servers: OpenBao audit log (this run's AppRole role; KV reads under "
          f"secret/data/{PREFIX}/), moto's recorder (access key {AKID}, by X-Amz-Target)")
    aws_ops = sorted({op for r in rows for op in r["aws"]})
    head = (f"{'window':<12}{'s':>6} | {'KV read':>7}{'pairs':>6}{'max/key':>8}{'LIST':>6}{'meta':>6}{'login':>6}{'renew':>6}{'check':>6}{'other':>6} |"
            + "".join(f"{op:>{max(len(op), 5) + 1}}" for op in aws_ops) + f"{'total':>6}{'ids':>6} | {'moto.log POST':>13}")
    print(head)
    for r in rows + [None]:
        if r is None:
            if I < 2:
                break
            name = f"mean of {I}"
            vk = Counter({k: sum(x["vault"][k] for x in window) / I
                          for k in ("read", "list", "meta", "login", "renew", "check", "other")})
            mx = max(max(x["per_key"].values(), default=0) for x in window)
            npairs = sum(x["pairs"] for x in window) / I
            nids = sum(x["ids"] for x in window) / I
            ak = Counter({op: sum(x["aws"][op] for x in window) / I for op in aws_ops})
            length = sum(x["len"] for x in window) / I
            ml = sum(x["moto_log"] for x in window) / I
            fmt = lambda v: f"{v:.1f}"
        else:
            name, vk, ak, length, ml = r["name"], r["vault"], r["aws"], r["len"], r["moto_log"]
            mx = max(r["per_key"].values(), default=0)
            npairs, nids = r["pairs"], r["ids"]
            fmt = lambda v: f"{v:.0f}"
        print(f"{name:<12}{length:>6.1f} | {fmt(vk['read']):>7}{fmt(npairs):>6}{mx:>8}{fmt(vk['list']):>6}{fmt(vk['meta']):>6}{fmt(vk['login']):>6}{fmt(vk['renew']):>6}"
              f"{fmt(vk['check']):>6}{fmt(vk['other']):>6} |"
              + "".join(f"{fmt(ak[op]):>{max(len(op), 5) + 1}}" for op in aws_ops)
              + f"{fmt(sum(ak[op] for op in aws_ops)):>6}{fmt(nids):>6} | {fmt(ml):>13}")
    print("(pairs: distinct (store session, key) read; max/key: most reads of one remote key; ids: secret ids "
          "the AWS calls asked for; moto.log POST: every POST / moto logged, from any client)")
    print()
    print("The controller's own counters (sigil_provider_requests_total, sigil_read_cache_total, sigil_sync_total)")
    prov = sorted({(l["provider"], l["operation"]) for _, b in snaps[1:] for n, l, _ in b["metrics"]
                   if n == "sigil_provider_requests_total"})
    results = sorted({l["result"] for _, b in snaps[1:] for n, l, _ in b["metrics"] if n == "sigil_sync_total"} - {"SecretSynced"})
    head = (f"{'window':<12} |" + "".join(f"{p + ' ' + o:>{len(p + o) + 2}}" for p, o in prov)
            + f" | {'hit':>6}{'miss':>6}{'coalesced':>10} | {'synced':>7}"
            + "".join(f"{x:>{len(x) + 1}}" for x in results))
    print(head)
    for r in rows:
        d = r["d"]
        print(f"{r['name']:<12} |" + "".join(f"{d('sigil_provider_requests_total', provider=p, operation=o):>{len(p + o) + 2}.0f}"
                                             for p, o in prov)
              + f" | {d('sigil_read_cache_total', outcome='hit'):>6.0f}{d('sigil_read_cache_total', outcome='miss'):>6.0f}"
                f"{d('sigil_read_cache_total', outcome='coalesced'):>10.0f} | {d('sigil_sync_total', result='SecretSynced'):>7.0f}"
              + "".join(f"{d('sigil_sync_total', result=x):>{len(x) + 1}.0f}" for x in results))
    failed = [x for x in results if sum(r["d"]("sigil_sync_total", result=x) for r in rows)]
    print(f"(provider requests of every result; sync failures: {', '.join(failed) if failed else 'none'})")
    print(f"at the end: {end_counts[0]} of {N} ExternalSecrets Ready, {end_counts[1]} Secrets hold the value")


# ---------------------------------------------------------------------------- cleanup

def clean():
    state = load_state()
    paths = ["/apis/sigil.dev/v1/namespaces/{ns}/externalsecrets", "/apis/sigil.dev/v1/namespaces/{ns}/secretstores",
             "/api/v1/namespaces/{ns}/secrets", "/api/v1/namespaces/{ns}/configmaps",
             "/api/v1/namespaces/{ns}/events", "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"]
    extra = []
    if state.get("recording"):
        extra.append(("moto recorder", moto.call, "POST", "/moto-api/recorder/stop-recording", b"", None, (200,)))
        if state.get("recording_file"):
            extra.append(("moto recording", os.remove, state["recording_file"]))
    cleanup(state, paths, [key_name(k) for k in range(K)] if state.get("keys") else [], extra)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup()
    elif cmd == "wait-stores":
        wait_stores()
    elif cmd == "create-es":
        st = load_state()
        st["create_s"] = create_es()
        save_state(st)
    elif cmd == "cold-snapshot":
        st = load_state()
        st["cold_start_snapshot"] = snapshot()
        save_state(st)
    elif cmd == "measure":
        measure(int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else None)
    elif cmd == "cleanup":
        clean()
PY

bench() { python3 "$work/bench.py" "$@"; }
echo "bench: run $run: remote keys, namespaces, stores ..." >&2
bench setup
if ((cold)); then
  echo "bench: creating $n ExternalSecrets, then starting the controller ..." >&2
  bench create-es
  bench cold-snapshot
  t0=$(date +%s.%N)
  bench_start_controller "bench-sync-$run" "$@"
  bench measure "$pid" "$t0"
else
  bench_start_controller "bench-sync-$run" "$@"
  bench_wait_ready
  bench wait-stores
  echo "bench: creating $n ExternalSecrets at once; measuring for $intervals x ${interval}s after the first full sync ..." >&2
  bench measure "$pid"
fi
