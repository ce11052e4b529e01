#!/usr/bin/env bash
# Builds the serving image (deploy/container/Dockerfile) with podman, on a Debian bookworm base image made
# here from Debian packages (mmdebstrap + `podman import`), for hosts that reach no container registry.
#
#   scripts/build-image.sh                 # radiolens-serve:<version>, on localhost/radiolens-base:bookworm
#   BASE_IMAGE=docker.io/library/python:3.11-slim scripts/build-image.sh   # a registry's base instead
#
# Environment: IMAGE (tag, default radiolens-serve:<version from pyproject.toml>), BASE_IMAGE (skip the
# Debian base), REBUILD_BASE=1 (make the Debian base again), MIRROR (Debian mirror, default deb.debian.org),
# PIP_CA (CA bundle the build's pip trusts; default: this host's pip/requests bundle). The CA bundle reaches
# the build as a build secret only, never a layer. Re-running reuses the base and podman's layer cache.
#
# Idempotent host set-up (root): podman, runc, catatonit, CNI plugins, iptables and mmdebstrap from apt; /etc/containers/containers.conf with
# runc as the runtime (crun does not run on hosts with the cgroup v1/hybrid layout) and default ulimits at or
# below this host's hard limits (podman's defaults are higher than some hosts allow, and then nothing starts).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)"
IMAGE="${IMAGE:-radiolens-serve:$version}"
DEBIAN_BASE="localhost/radiolens-base:bookworm"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# catatonit: the init process of `podman run --init`; CNI plugins and iptables: published ports.
need=()
for pkg in podman runc catatonit containernetworking-plugins iptables; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ -z "${BASE_IMAGE:-}" ]; then dpkg -s mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Limits for containers and RUN steps: the host's hard limits, nproc capped at 32768 (higher values, even
# below the shell's hard limit, were refused by runc on hosts without CAP_SYS_RESOURCE).
nofile="$(ulimit -Hn)"; nproc="$(ulimit -Hu)"
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
conf=/etc/containers/containers.conf
marker="# radiolens: runc, ulimits within the host's hard limits"
if [ -s "$conf" ] && ! grep -q "^# radiolens:" "$conf"; then
  echo "note: $conf exists without radiolens' settings; left as it is (needs runtime = \"runc\" and"
  echo "      default_ulimits nofile=$nofile, nproc=$nproc on hosts where podman run fails)"
else
  $SUDO mkdir -p /etc/containers
  printf '%s\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n\n[engine]\nruntime = "runc"\n' \
    "$marker" "$nofile" "$nofile" "$nproc" "$nproc" | $SUDO tee "$conf" >/dev/null
fi

if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE="$DEBIAN_BASE"
  if [ "${REBUILD_BASE:-0}" = 1 ] || ! $SUDO podman image exists "$DEBIAN_BASE"; then
    echo "building $DEBIAN_BASE with mmdebstrap (bookworm minbase + python3.11)"
    t0=$(date +%s)
    # No documentation, man pages or translations (dpkg path excludes, kept for later installs too); no
    # recommended packages. python3.11-venv is added by the Dockerfile's builder stage only.
    # usrmerge and the perl it pulls in (about 50 MB) are replaced by the usr-is-merged marker package.
    $SUDO mmdebstrap --variant=minbase --include=usr-is-merged,python3.11,ca-certificates \
      --customize-hook='chroot "$1" apt-get purge -y -qq usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl' \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      bookworm - "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
      "deb ${MIRROR%/debian}/debian-security bookworm-security main" \
      | $SUDO podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN_BASE" >/dev/null
    echo "base image: $(( $(date +%s) - t0 )) s"
  fi
fi

ca="${PIP_CA:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}}"
secret=()
if [ -s "$ca" ]; then secret=(--secret "id=pip-ca,src=$ca"); fi

echo "building $IMAGE from $BASE_IMAGE"
t0=$(date +%s)
# --format docker: the OCI image format has no HEALTHCHECK. --network host: the build reaches the package
# index the way this host does.
# --ulimit: buildah sets its own nproc/nofile limits for RUN steps (containers.conf's do not apply there), and
# without CAP_SYS_RESOURCE a limit above the host's hard limit stops every RUN step.
$SUDO podman build --format docker --layers --network host "${secret[@]}" \
  --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f "$root/deploy/container/Dockerfile" "$root"
echo "image build: $(( $(date +%s) - t0 )) s"
$SUDO podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
