#!/usr/bin/env bash
# Regenerates go.mod/go.sum for KUBERNETES_VERSION in ../versions.env: requires
# k8s.io/kubernetes at that version and replaces every k8s.io/* staging module it
# lists at v0.0.0 with v0.<minor>.<patch>. One module builds every command
# (kube-apiserver/, kube-controller-manager/, kube-scheduler/, kubectl/), so they always
# share a version.
# Run after bumping the version.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source-path=SCRIPTDIR source=../versions.env
source ../versions.env
staging=v0.${KUBERNETES_VERSION#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
printf 'module sigil.dev/tests/env/kubernetes\n\ngo 1.24.0\n' >go.mod
rm -f go.sum
for m in $(grep -E '^\s+k8s.io/\S+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u); do
  go mod edit -replace="$m=$m@$staging"
done
go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
GOFLAGS=-mod=mod go mod tidy
echo "go.mod: k8s.io/kubernetes $KUBERNETES_VERSION, staging modules $staging"
