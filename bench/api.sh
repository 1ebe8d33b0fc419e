#!/usr/bin/env bash
# sigil-api under load: a release-built sigil-api on loopback (plain
# HTTP), driven by oha (an HTTP load generator from crates.io, built once into the cache),
# with the admin token of the test environment. Two phases, one after the other:
#   create  POST /v1/namespaces/NS/rotations, a dry-run Rotation of one ExternalSecret, by
#           K oha processes at once, each with its own fixed Idempotency-Key: the first
#           request of each key makes the Rotation (201), every later one is a replay
#           (200), the first ones racing each other over the same key
#   get     GET /v1/namespaces/NS/rotations/NAME of one of those Rotations
# Prints, per phase, requests/s, p50 and p99 latency (as oha measured each request) and
# errors (transport errors and any status but 201/200 for creates, 200 for reads); then
# checks the Rotations in the namespace, read from the apiserver and through the API:
# exactly one per Idempotency-Key, and exactly one 201 per key. Also the API's peak RSS
# and CPU time, and the apiserver requests it made per request (TokenReview and
# SubjectAccessReview cache misses, ExternalSecret and Rotation reads and writes). Exits 1
# if any request failed or a key made anything but exactly one Rotation.
#
# Usage: bench/api.sh [options] [-- extra sigil-api flags]
#   --duration S    seconds of each phase (default 30: 60 s of load in all)
#   -c N            connections of each phase (default 32); the create phase splits them
#                   among its keys (at least 1 each)
#   --keys K        Idempotency-Keys of the create phase (default 4), one oha process each
#   --env E         private (default): a throwaway environment of its own (scripts/env up
#                   with SIGIL_ENV_DIR in a temporary directory, stopped at the end).
#                   shared: the running environment (${SIGIL_ENV_DIR:-.env}, started if
#                   down); other traffic to its apiserver then shows in the apiserver
#                   counts.
# sigil-api runs with --rate-limit 0 unless the extra flags set it: its per-user limit
# (20/s, bursts of 40 by default) would answer most of this load with 429, which counts as
# an error here. The review cache keeps its default (--review-cache-ttl 10s). The
# controller (release build, --watch-namespace of this run's namespace) runs too, so the
# dry-run Rotations are reconciled as they would be; the API needs it only for verify and
# re-seal. The token is on oha's command line (a throwaway environment's admin token).
# Everything this run made (its namespace and all in it, the remote key, the AppRole
# role) is removed at the end; BENCH_KEEP=1 keeps the temporary directory (oha's JSON and
# SQLite results, the API's log and audit lines, the controller's log) instead.
set -euo pipefail
duration=30 conns=32 keys=4 envmode=private
while (($#)); do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --env) envmode=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in "$duration" "$conns" "$keys"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench: --duration, -c and --keys are whole numbers > 0" >&2; exit 2; }
done
[[ $envmode == private || $envmode == shared ]] || { echo "bench: --env is private or shared" >&2; exit 2; }
flags=("$@")
[[ " ${flags[*]} " == *" --rate-limit"[=\ ]* ]] || flags=(--rate-limit 0 "${flags[@]}")

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
bench_build_api
bench_oha
bench_init
bench_env
ns=bench-api-$run
export BENCH_NS=$ns BENCH_KEYS=$keys BENCH_DURATION=$duration BENCH_CONNS=$conns \
  BENCH_API_FLAGS="${flags[*]}"
bench_pylib

cat >"$work/bench.py" <<'PY'
"""bench/api.sh's client side: setup, snapshots around the phases (CPU, the apiserver's
request counters), the key -> Rotation names, the table and the checks, cleanup."""
import glob
import json
import math
import os
import re
import secrets
import sqlite3
import sys
import time
from datetime import datetime

from benchlib import (E, LABEL, LABELS_RE, RUN, WORK, Http, approle_role, apply_crds, cleanup,
                      create_namespaces, credentials, kube, load_state, provider_spec, save_state,
                      vault, wait_ready)

NS, K = E["BENCH_NS"], int(E["BENCH_KEYS"])
ROLE = f"sigil-bench-{RUN}"
AKID = f"bench-{RUN}"
KEY = f"bench/{RUN}/db"
ES = "db"
BODY = {"externalSecretRef": {"name": ES}, "reason": f"bench/api.sh run {RUN}", "dryRun": True}
TOKEN = E["SIGIL_KUBE_ADMIN_TOKEN"]
api = Http(f"http://127.0.0.1:{E['BENCH_API_PORT']}" if "BENCH_API_PORT" in E else "http://127.0.0.1:1",
           {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Accept": "application/json"})
ROTATIONS = f"/v1/namespaces/{NS}/rotations"
# The apiserver requests sigil-api makes, as the apiserver counts them.
WATCHED = ("tokenreviews", "subjectaccessreviews", "externalsecrets", "rotations", "events")
TICK = os.sysconf("SC_CLK_TCK")


def idem_key(i):
    return f"bench-{RUN}-key-{i}"


# ---------------------------------------------------------------------------- setup

def setup():
    state = {}
    role_id, secret_id = approle_role(state, ROLE)
    state["keys"] = [KEY]
    save_state(state)
    vault.call("POST", f"/v1/secret/data/{KEY}", {"data": {"password": secrets.token_hex(12)}})
    apply_crds()
    create_namespaces(state, [NS])
    credentials(NS, secret_id, AKID)
    kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{NS}/secretstores",
              {"apiVersion": "sigil.dev/v1", "kind": "SecretStore",
               "metadata": {"name": "vault", "labels": {LABEL: RUN}},
               "spec": {"provider": provider_spec("vault", role_id)}})
    kube.call("POST", f"/apis/sigil.dev/v1/namespaces/{NS}/externalsecrets",
              {"apiVersion": "sigil.dev/v1", "kind": "ExternalSecret",
               "metadata": {"name": ES, "labels": {LABEL: RUN}},
               "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                        "target": {"template": {"metadata": {"labels": {LABEL: RUN}}}},
                        "data": [{"secretKey": "password", "remoteRef": {"key": KEY, "property": "password"}}]}})


def wait():
    wait_ready(f"/apis/sigil.dev/v1/namespaces/{NS}/secretstores", 1, "SecretStores")
    wait_ready(f"/apis/sigil.dev/v1/namespaces/{NS}/externalsecrets", 1, "ExternalSecrets")


# ---------------------------------------------------------------------------- snapshots

def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks; None when it is not there."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def processes(api_pid, ctl_pid):
    """The processes whose CPU time is reported: name -> pid."""
    procs = {"sigil-api": api_pid, "sigil-controller": ctl_pid}
    pids = E.get("SIGIL_ENV_PID_FILE_DIR", "")
    for name in ("kube-apiserver", "etcd"):
        try:
            with open(os.path.join(pids, name)) as f:
                procs[name] = int(f.read().strip())
        except (OSError, ValueError):
            pass
    return procs


def machine_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def apiserver_counts():
    """apiserver_request_total of the resources sigil-api touches: 'verb resource' -> n."""
    _, raw = kube.call("GET", "/metrics", headers={"Accept": "text/plain"})
    out = {}
    for line in raw.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        series, _, value = line.rpartition(" ")
        labels = dict(LABELS_RE.findall(series))
        if labels.get("resource") in WATCHED and not labels.get("subresource"):
            k = f"{labels['verb']} {labels['resource']}"
            out[k] = out.get(k, 0) + float(value)
    return out


def mark(name, api_pid, ctl_pid):
    snap = {"t": time.time(), "cpu": {p: cpu_ticks(pid) for p, pid in processes(api_pid, ctl_pid).items()},
            "machine": machine_busy(), "apiserver": apiserver_counts()}
    with open(os.path.join(WORK, f"mark-{name}.json"), "w") as f:
        json.dump(snap, f)


def names():
    """Each key's Rotation, as one more replay through the API says (200 expected);
    written to names.json, the first one printed for the read phase."""
    got = []
    for i in range(K):
        status, raw = api.call("POST", ROTATIONS, BODY, headers={"Idempotency-Key": idem_key(i)}, ok=None)
        if status != 200:
            sys.exit(f"bench: the replay of Idempotency-Key {idem_key(i)} answered HTTP {status} (want 200): "
                     f"{raw[:300].decode(errors='replace')}")
        got.append(json.loads(raw)["metadata"]["name"])
    with open(os.path.join(WORK, "names.json"), "w") as f:
        json.dump(got, f)
    print(got[0])


# ---------------------------------------------------------------------------- the table

def percentile(values, q):
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None


def phase_results(prefix, ok_codes):
    """oha's JSON summaries and per-request rows (SQLite) of every process of a phase."""
    codes, transport, durations, walls = {}, {}, [], []
    for path in sorted(glob.glob(os.path.join(WORK, f"{prefix}-*.json"))):
        with open(path) as f:
            out = json.load(f)
        walls.append(out["summary"]["total"])
        for code, n in out["statusCodeDistribution"].items():
            codes[code] = codes.get(code, 0) + n
        for err, n in out["errorDistribution"].items():
            transport[err] = transport.get(err, 0) + n
        with sqlite3.connect(path[:-5] + ".db") as db:
            durations += [d for (d,) in db.execute("SELECT duration FROM oha")]
    answered = sum(codes.values())
    bad = sum(n for c, n in codes.items() if int(c) not in ok_codes)
    return {"processes": len(walls), "wall": max(walls) if walls else 0, "codes": codes, "transport": transport,
            "answered": answered, "errors": bad + sum(transport.values()), "durations": durations}


def per_key_created():
    """201s seen by each key's oha process."""
    out = {}
    for i in range(K):
        with open(os.path.join(WORK, f"create-{i}.json")) as f:
            out[i] = json.load(f)["statusCodeDistribution"].get("201", 0)
    return out


def api_metrics():
    """sigil-api's own sigil_api_requests_total: (method, route, code) -> n."""
    _, raw = api.call("GET", "/metrics", ok=(200,))
    out = {}
    for line in raw.decode().splitlines():
        if line.startswith("sigil_api_requests_total{"):
            series, _, value = line.rpartition(" ")
            labels = dict(LABELS_RE.findall(series))
            out[(labels["method"], labels["route"], labels["code"])] = float(value)
    return out


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def audit_calls():
    """The API's audit lines (stdout), each with the time it was answered."""
    with open(os.path.join(WORK, "api-audit.log")) as f:
        for line in f:
            try:
                entry = json.loads(line)
                end = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError):
                continue
            yield entry, end


def server_side(a, b, method, path_re):
    """duration_ms of the API's audit lines of calls answered between two marks."""
    return [entry["duration_ms"] for entry, t in audit_calls()
            if a["t"] <= t <= b["t"] and entry.get("method") == method
            and re.fullmatch(path_re, entry.get("path", ""))]


def overlapping_replays():
    """Replays (POST, 200) that arrived while their key's creating request (201) was still
    in flight, from the audit lines: the race an Idempotency-Key must win."""
    calls = [(e["result"], e.get("rotation"), end - e["duration_ms"] / 1000, end)
             for e, end in audit_calls() if e.get("method") == "POST" and e.get("path") == ROTATIONS]
    firsts = {rot: end for code, rot, _, end in calls if code == 201}
    return sum(1 for code, rot, start, _ in calls if code == 200 and rot in firsts and start < firsts[rot])


def load(name):
    with open(os.path.join(WORK, f"mark-{name}.json")) as f:
        return json.load(f)


def report(api_pid):
    m = [load(n) for n in ("start", "created", "resolved", "end")]
    phases = [("create", "POST one dry-run Rotation", phase_results("create", (200, 201)), m[0], m[1]),
              ("get", "GET that Rotation", phase_results("get", (200,)), m[2], m[3])]
    dur, conns = int(E["BENCH_DURATION"]), int(E["BENCH_CONNS"])
    per = max(1, conns // K)
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[0]
    print(f"sigil bench/api.sh  run {RUN}  env {E['BENCH_ENV']}  {os.cpu_count()} CPUs  load average {loadavg}")
    print(f"  sigil-api (release, plain HTTP on loopback) flags: {E['BENCH_API_FLAGS']}; caller: the admin token "
          f"(sigil-admin, system:masters); oha {E['OHA_VERSION']}, keep-alive HTTP/1.1")
    print(f"  create: {K} oha processes at once for {dur} s, each with its own Idempotency-Key and {per} connections; "
          f"get: 1 oha process, {conns} connections, {dur} s; body {json.dumps(BODY)}")
    print()
    print(f"{'phase':34}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    failed = False
    for name, what, r, a, b in phases:
        d = r["durations"]
        rps = r["answered"] / r["wall"] if r["wall"] else 0
        p50, p99 = percentile(d, 0.5), percentile(d, 0.99)
        fmt = lambda v: "-" if v is None else f"{v * 1000:.1f}"  # noqa: E731
        print(f"{name + ' (' + what + ')':34}{r['answered']:>10}{rps:>9.0f}{fmt(p50):>9}{fmt(p99):>9}"
              f"{fmt(max(d) if d else None):>9}{r['errors']:>8}")
        failed |= r["errors"] > 0 or r["answered"] == 0
    print()
    for (name, _, r, a, b), method, path_re in zip(phases, ("POST", "GET"), (ROTATIONS, ROTATIONS + "/[^/]+")):
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(r["codes"].items()))
        errs = "; ".join(f"{e} x{n}" for e, n in r["transport"].items()) or "none"
        server = server_side(a, b, method, path_re)
        print(f"  {name}: HTTP {codes}; transport errors: {errs}; inside sigil-api (its audit lines' duration_ms, "
              f"{len(server)} calls): p50 {percentile(server, 0.5)} ms, p99 {percentile(server, 0.99)} ms")

    # ------------------------------------------------------------------ the Rotations
    with open(os.path.join(WORK, "names.json")) as f:
        key_names = json.load(f)
    stored = [o["metadata"]["name"] for o in
              kube.json("GET", f"/apis/sigil.dev/v1/namespaces/{NS}/rotations")["items"]]
    listed = [o["metadata"]["name"] for o in api.json("GET", ROTATIONS)["items"]]
    created = per_key_created()
    problems = []
    if len(set(key_names)) != K:
        problems.append(f"{K} keys resolve to {len(set(key_names))} distinct Rotations: {key_names}")
    if sorted(stored) != sorted(set(key_names)):
        problems.append(f"the namespace holds {len(stored)} Rotations {sorted(stored)}, want exactly the {K} "
                        f"of the keys {sorted(key_names)}")
    if sorted(listed) != sorted(stored):
        problems.append(f"the API lists {sorted(listed)}, the apiserver has {sorted(stored)}")
    for i, n in created.items():
        if n != 1:
            problems.append(f"Idempotency-Key {idem_key(i)} was answered 201 {n} times, want once")
    print()
    print(f"Rotations in {NS}: {len(stored)} (apiserver), {len(listed)} (GET {ROTATIONS}) for {K} Idempotency-Keys; "
          f"201 per key: {', '.join(str(created[i]) for i in range(K))}; duplicates: "
          f"{'none' if not problems else 'YES'}; replays that started while their key's 201 was in flight: "
          f"{overlapping_replays()}")
    for p in problems:
        print(f"  PROBLEM: {p}")
    phase_of = {o["metadata"]["name"]: (o.get("status") or {}).get("phase", "-") for o in
                kube.json("GET", f"/apis/sigil.dev/v1/namespaces/{NS}/rotations")["items"]}
    print(f"  their phase as the controller left it (dry run): "
          f"{', '.join(f'{n} {p}' for n, p in sorted(phase_of.items()))}")

    # ------------------------------------------------------------------ where the work went
    hwm, rss = peak_rss(api_pid)
    print()
    print(f"sigil-api: peak RSS (VmHWM) {hwm:.1f} MiB, RSS at the end {rss:.1f} MiB")
    for name, _, r, a, b in phases:
        wall = b["t"] - a["t"]
        busy = (b["machine"][0] - a["machine"][0]) / max(1, b["machine"][1] - a["machine"][1])
        cpu = ", ".join(f"{p} {(b['cpu'][p] - a['cpu'][p]) / TICK / wall * 100:.0f}%"
                        for p in a["cpu"] if a["cpu"].get(p) is not None and b["cpu"].get(p) is not None)
        print(f"  {name}: CPU over {wall:.1f} s (100% = one core): {cpu}; machine busy {busy * 100:.0f}% "
              f"of {os.cpu_count()} cores (oha and everything else included)")
        calls = {k: b["apiserver"].get(k, 0) - a["apiserver"].get(k, 0) for k in b["apiserver"]}
        calls = {k: v for k, v in calls.items() if v}
        n = max(1, r["answered"])
        print(f"    apiserver requests (the controller's included) for {n} API requests: "
              + (", ".join(f"{k} {v:.0f} ({v / n:.3f} each)" for k, v in sorted(calls.items())) or "none"))
    own = api_metrics()
    print("  sigil-api's own count (sigil_api_requests_total, the replays of names.json and the list included): "
          + ", ".join(f"{meth} {route} {code} x{v:.0f}" for (meth, route, code), v in sorted(own.items())
                      if "rotations" in route))
    if failed or problems:
        print("bench: FAILED: " + ("some requests failed" if failed else "")
              + ("; " if failed and problems else "") + ("duplicate or missing Rotations" if problems else ""))
        sys.exit(1)


# ---------------------------------------------------------------------------- cleanup

def clean():
    state = load_state()
    paths = ["/apis/sigil.dev/v1/namespaces/{ns}/rotations", "/apis/sigil.dev/v1/namespaces/{ns}/externalsecrets",
             "/apis/sigil.dev/v1/namespaces/{ns}/secretstores", "/api/v1/namespaces/{ns}/secrets",
             "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", "/api/v1/namespaces/{ns}/events"]
    cleanup(state, paths, state.get("keys", []))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup()
    elif cmd == "wait":
        wait()
    elif cmd == "mark":
        mark(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "names":
        names()
    elif cmd == "report":
        report(int(sys.argv[2]))
    elif cmd == "cleanup":
        clean()
PY

bench() { python3 "$work/bench.py" "$@"; }
export OHA_VERSION
echo "bench: run $run: namespace $ns, remote key, SecretStore, ExternalSecret ..." >&2
bench setup
bench_start_controller "$ns" --watch-namespace "$ns"
bench_wait_ready
bench wait
bench_start_api --namespace "$ns" "${flags[@]}"
bench_wait_api

url=http://127.0.0.1:$api_port/v1/namespaces/$ns/rotations
body='{"externalSecretRef":{"name":"db"},"reason":"bench/api.sh run '$run'","dryRun":true}'
auth="Authorization: Bearer $SIGIL_KUBE_ADMIN_TOKEN"
per=$((conns / keys)); ((per >= 1)) || per=1
# -w: requests in flight at the deadline finish (counted) instead of being aborted
# (which oha would count as errors).
load() { "$oha" --no-tui -w -z "${duration}s" --output-format json "$@" >/dev/null; }

echo "bench: create: $keys Idempotency-Keys x $per connections for ${duration}s ..." >&2
bench mark start "$api_pid" "$pid"
loaders=()
for ((i = 0; i < keys; i++)); do
  load -c "$per" -m POST -T application/json -d "$body" -H "$auth" -H "Idempotency-Key: bench-$run-key-$i" \
    -o "$work/create-$i.json" --db-url "$work/create-$i.db" "$url" &
  loaders+=($!)
done
for l in "${loaders[@]}"; do wait "$l"; done
bench mark created "$api_pid" "$pid"

name=$(bench names)
bench mark resolved "$api_pid" "$pid"
echo "bench: get: $url/$name, $conns connections for ${duration}s ..." >&2
load -c "$conns" -H "$auth" -o "$work/get-0.json" --db-url "$work/get-0.db" "$url/$name"
bench mark end "$api_pid" "$pid"
bench report "$api_pid"
