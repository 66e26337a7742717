#!/usr/bin/env bash
# Build one target of the Dockerfile, unchanged, with podman and no Docker engine: RUN steps run in a
# chroot (--isolation chroot), base images come from local storage only (--pull=never; see
# standin-base.sh), and pip in the RUN steps uses this machine's pip configuration (pip_mounts.py).
#
#   deploy/image/build.sh cpu [TAG] [more podman build arguments]     # TAG defaults to zeroembed:TARGET
#
# TORCH_INDEX_URL (the Dockerfile's build argument) defaults to this machine's pip index, since
# PyTorch's own index may be out of reach; set it to build against another.
set -euo pipefail

target=${1:?usage: $0 TARGET [TAG] [podman build arguments]}
tag=${2:-zeroembed:$target}
shift $(( $# < 2 ? $# : 2 ))
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t mounts < <(python3 "$here/pip_mounts.py" "$work")
index=$(python3 -m pip config get global.index-url 2>/dev/null || true)
torch_index=${TORCH_INDEX_URL:-${index:-https://pypi.org/simple}}

# --layers=false: nothing of a previous build is reused (the build is timed, and CI caches nothing);
# --format docker: the OCI format has no HEALTHCHECK.
exec podman build --isolation chroot --pull=never --layers=false --format docker --target "$target" --tag "$tag" \
    "${mounts[@]}" --build-arg TORCH_INDEX_URL="$torch_index" "$@" "$root"
