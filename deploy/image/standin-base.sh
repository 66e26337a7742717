#!/usr/bin/env bash
# Make a stand-in for the base image of one Dockerfile stage from Debian packages, and tag it with the
# exact name the Dockerfile uses, so the Dockerfile builds unchanged with `podman build --pull=never`
# where the public registries cannot be reached (docs/deploy.md, "Building the image without a registry").
#
#   deploy/image/standin-base.sh cpu    # python:X.Y-slim: Debian's Python X.Y, with python/pip like the official image
#   deploy/image/standin-base.sh gpu    # nvidia/cuda:...: a bare Debian (no CUDA); the stage installs its own Python
#
# Needs root, debootstrap and podman. DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

stage=${1:?usage: $0 cpu|gpu}
here=$(cd "$(dirname "$0")" && pwd)
dockerfile=${DOCKERFILE:-$here/../../Dockerfile}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

image=$(awk -v s="$stage" 'toupper($1) == "FROM" && toupper($3) == "AS" && $4 == s { print $2 }' "$dockerfile")
[[ -n $image ]] || { echo "standin-base: no stage '$stage' in $dockerfile" >&2; exit 2; }

# The name podman resolves the Dockerfile's short name to (docker.io/library/python, docker.io/nvidia/cuda).
qualified=$image
first=${image%%/*}
if [[ $image != */* ]]; then
    qualified=docker.io/library/$image
elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    qualified=docker.io/$image
fi

case $image in
    python:*-slim*)
        minor=${image#python:}
        minor=${minor%%-*}
        # The Debian release whose python3 is that minor version.
        case $minor in
            3.11) suite=bookworm ;;
            3.13) suite=trixie ;;
            *) echo "standin-base: no Debian release ships Python $minor" >&2; exit 2 ;;
        esac
        packages=ca-certificates,netbase,python3,python3-pip,python-is-python3
        ;;
    nvidia/cuda:*)
        # No CUDA and no Ubuntu here: a Debian with what the CUDA runtime image brings besides CUDA
        # (ca-certificates); the stage's own RUN steps install Python with apt.
        suite=bookworm
        minor=""
        packages=ca-certificates
        ;;
    *) echo "standin-base: no recipe for base image $image" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "standin-base: debootstrap $suite ($packages) for $qualified" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

if [[ -n $minor ]]; then
    # The official image's pip installs into its own Python, unlike Debian's which refuses (PEP 668).
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    [[ -e $rootfs/usr/bin/pip ]] || ln -s pip3 "$rootfs/usr/bin/pip"
    got=$(chroot "$rootfs" python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $got == "$minor" ]] || { echo "standin-base: $suite has Python $got, $image has $minor" >&2; exit 1; }
    chroot "$rootfs" pip --version >&2
fi
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log

tar -C "$rootfs" --numeric-owner -c . \
    | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        - "$qualified" >/dev/null
echo "standin-base: tagged $qualified" >&2
