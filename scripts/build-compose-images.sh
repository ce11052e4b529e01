#!/usr/bin/env bash
# Builds every image compose.yaml runs, on hosts that reach no container registry: the radiolens service
# (scripts/build-image.sh) and PostgreSQL, Orthanc (with its DICOMweb plugin) and Prometheus, each made here
# from Debian bookworm packages with mmdebstrap and `podman import`. Grafana is not packaged by Debian: its
# service (compose.grafana.yaml) uses Grafana's own image from a registry.
#
#   scripts/build-compose-images.sh          # what is missing; REBUILD=1 makes the Debian images again
#
# Idempotent host set-up (root), on top of scripts/build-image.sh's (podman, runc, containers.conf ulimits):
# podman-compose, and the CNI dnsname plugin with dnsmasq, through which the services find each other by
# name on the compose network. Environment: MIRROR (Debian mirror), PIP_CA (see scripts/build-image.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

"$root/scripts/build-image.sh"

need=()
for pkg in podman-compose golang-github-containernetworking-plugin-dnsname dnsmasq-base mmdebstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# debian_image NAME PACKAGES SETUP CUSTOMIZE CHANGES...: a bookworm minbase with PACKAGES, imported as NAME.
# SETUP runs before the packages are installed, when only the essential ones are (no useradd yet): fixed user
# ids written to /etc/passwd and /etc/group, so that secret files on the host can be given to the right owner
# (the packages' own scripts then find their user present). CUSTOMIZE runs after (mmdebstrap hooks: "$1" is the root). No documentation,
# manual pages or translations; no recommended packages.
debian_image() {
  local name="$1" packages="$2" setup="$3" customize="$4"
  shift 4
  if [ "${REBUILD:-0}" != 1 ] && $SUDO podman image exists "$name"; then
    echo "$name: present (REBUILD=1 makes it again)"
    return
  fi
  echo "building $name from Debian packages: $packages"
  local t0 changes=() tarball
  t0=$(date +%s)
  for c in "$@"; do changes+=(--change "$c"); done
  # Through a file, not a pipe: a failed mmdebstrap must not leave a truncated image behind.
  tarball="$(mktemp -d)/rootfs.tar"
  trap 'rm -rf "$(dirname "$tarball")"' RETURN
  $SUDO mmdebstrap --variant=minbase --include="usr-is-merged,$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --essential-hook="$setup" --customize-hook="$customize" \
    --customize-hook='chroot "$1" apt-get clean' --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
    bookworm "$tarball" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb ${MIRROR%/debian}/debian-security bookworm-security main"
  $SUDO podman import "${changes[@]}" "$tarball" "$name" >/dev/null
  echo "$name: $(( $(date +%s) - t0 )) s, $($SUDO podman images --format '{{.Size}}' "$name")"
}

compose="$root/deploy/compose"

# PostgreSQL 15 as user postgres (uid/gid 999, as in the postgres image of the registries); the entrypoint
# follows that image's interface (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE, PGDATA), so either
# image serves compose.yaml. No cluster is made at install time: the entrypoint makes one in the volume.
debian_image localhost/radiolens-postgres:bookworm postgresql-15 \
  'echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh" >> "$1"/etc/passwd && echo "postgres:x:999:" >> "$1"/etc/group && mkdir -p "$1"/etc/postgresql-common && echo "create_main_cluster = false" > "$1"/etc/postgresql-common/createcluster.conf' \
  "install -m 0755 $compose/postgres/docker-entrypoint.sh \"\$1\"/usr/local/bin/docker-entrypoint.sh && install -d -o 999 -g 999 -m 0700 \"\$1\"/var/lib/postgresql/data" \
  'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  'ENV PGDATA=/var/lib/postgresql/data' 'ENV PGHOST=/tmp' 'USER postgres' 'STOPSIGNAL SIGINT' 'EXPOSE 5432' \
  'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["postgres"]'

# Orthanc 1.10 with the DICOMweb plugin, as user orthanc (uid/gid 998). deploy/compose/orthanc/orthanc.json
# (DICOMweb section included) replaces Debian's configuration files; the users (credentials.json) come from a
# secret file. curl: the healthcheck.
debian_image localhost/radiolens-orthanc:bookworm orthanc,orthanc-dicomweb,curl \
  'echo "orthanc:x:998:998:Orthanc:/var/lib/orthanc:/bin/sh" >> "$1"/etc/passwd && echo "orthanc:x:998:" >> "$1"/etc/group' \
  "install -m 0644 $compose/orthanc/orthanc.json \"\$1\"/etc/orthanc/orthanc.json && rm -f \"\$1\"/etc/orthanc/serve-folders.json \"\$1\"/etc/orthanc/worklists.json \"\$1\"/etc/orthanc/dicomweb.json && install -d -o 998 -g 998 -m 0750 \"\$1\"/var/lib/orthanc/db" \
  'USER orthanc' 'EXPOSE 4242' 'EXPOSE 8042' 'ENTRYPOINT ["/usr/sbin/Orthanc"]' 'CMD ["/etc/orthanc/"]'

# Prometheus 2.42 as nobody (uid 65534, as in the prom/prometheus image), storage in /prometheus.
debian_image localhost/radiolens-prometheus:bookworm prometheus \
  'true' \
  'install -d -o 65534 -g 65534 -m 0755 "$1"/prometheus' \
  'USER 65534:65534' 'EXPOSE 9090' 'WORKDIR /prometheus' 'ENTRYPOINT ["/usr/bin/prometheus"]' \
  'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
