#!/usr/bin/env bash
# The secret files compose.yaml (and compose.grafana.yaml) mount, made once with random values: each readable by
# its owner only (mode 0600), owned by the user id of the container that reads it. An existing file is kept, so
# re-running changes nothing (remove a file to make it again; the PostgreSQL password is only read when the
# database volume is first initialised).
#
#   scripts/compose-secrets.sh [DIR]        # default deploy/compose/secrets (ignored by git)
#
# Owners: 10001 radiolens, 999 postgres, 998 orthanc (the images of scripts/build-compose-images.sh), 472 grafana
# (Grafana's image). Containers run rootful (podman as root, or docker): the ids are the host's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-${RADIOLENS_SECRETS_DIR:-$root/deploy/compose/secrets}}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO install -d -m 0755 "$dir"

token() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

# put NAME OWNER CONTENT: the file, written owner-only before it is given away.
put() {
  local path="$dir/$1"
  if $SUDO test -s "$path"; then return; fi
  (umask 077; printf '%s\n' "$3" | $SUDO tee "$path.new" >/dev/null)
  $SUDO chown "$2:$2" "$path.new"
  $SUDO chmod 0600 "$path.new"
  $SUDO mv "$path.new" "$path"
  echo "made $path"
}

put radiolens-deid-secret 10001 "$(token)"
if ! $SUDO test -s "$dir/postgres-password"; then
  pg="$(token)"
  put postgres-password 999 "$pg"
  # libpq's password file: host:port:database:user:password
  $SUDO rm -f "$dir/radiolens-pgpass"
  put radiolens-pgpass 10001 "postgres:5432:radiolens:radiolens:$pg"
fi
orthanc_password="$(token)"
put orthanc-credentials.json 998 "{\"RegisteredUsers\": {\"radiolens\": \"$orthanc_password\"}}"
put grafana-admin-password 472 "$(token)"
