#!/usr/bin/env bash
# Install what building and running the image without a Docker engine needs: podman, buildah (both run
# RUN steps and commands in a chroot) and debootstrap (the base image stand-in). Debian/Ubuntu, as root;
# does nothing when all three are there.
set -euo pipefail
missing=()
for program in podman buildah debootstrap; do
    command -v "$program" >/dev/null || missing+=("$program")
done
if (( ${#missing[@]} )); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
