#!/usr/bin/env bash
# Validates deploy/k8s offline against the Kubernetes API schemas that PyPI's kubernetes-validate
# bundles (strict: unknown fields are errors), without a cluster, kubectl or kustomize. Every file
# the kustomization lists is validated, and every manifest in the directory must be listed. When
# kubectl is installed, the rendered kustomization (`kubectl kustomize`) is validated too.
#
#   scripts/k8s-validate.sh           installs kubernetes-validate in target/k8s-validate-venv once
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
version=1.31.0          # the Kubernetes version validated against
pin=kubernetes-validate==1.31.0
venv=$here/target/k8s-validate-venv
dir=deploy/k8s

if ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  timeout 300 "$venv/bin/pip" install -q --disable-pip-version-check "$pin"
fi

# The resources the kustomization lists, and the manifests that are not listed.
mapfile -t listed < <("$venv/bin/python" - "$dir" <<'PY'
import os, sys, yaml
d = sys.argv[1]
k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
res = k["resources"]
for r in res:
    print(os.path.join(d, r))
extra = sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and f not in res)
if extra:
    sys.exit(f"{d}: not in kustomization.yaml resources: {extra}")
PY
)
((${#listed[@]})) || { echo "k8s-validate: nothing listed in $dir/kustomization.yaml" >&2; exit 1; }

out=$(timeout 120 "$venv/bin/kubernetes-validate" --strict -k "$version" "${listed[@]}" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
# A kind without a schema is only a warning there: here it is an error.
if grep -v '^INFO ' <<<"$out" | grep -q .; then
  echo "k8s-validate: warnings above" >&2
  exit 1
fi
if command -v kubectl >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml); trap 'rm -f "$rendered"' EXIT
  kubectl kustomize "$dir" >"$rendered"
  timeout 120 "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered"
  echo "k8s-validate: kubectl kustomize $dir renders $(grep -c '^kind:' "$rendered") resources, all valid"
else
  echo "k8s-validate: kubectl not installed, the rendered kustomization is not checked"
fi
echo "k8s-validate: ${#listed[@]} files of $dir valid against Kubernetes $version (strict)"
