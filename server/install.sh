#!/bin/sh
# PCloud one-line install, served by a coordination server as GET /install.sh:
#   curl -fsSLk --pinnedpubkey @PIN@ @BASE@/install.sh | sudo sh -s -- --auth-key pk_...
# Installs this server's own pcloud package for this device's architecture, downloaded from the
# same server with the same key pin (no trust on first use, no internet: apt needs the Debian
# dependencies available, from a mirror or already installed), then logs in with the key.
#   --auth-key KEY       pre-auth key (or PCLOUD_AUTH_KEY in the environment)
#   --server-role        then `pcloud join-server` with the same (server-role) key
# The values below were filled in by the server.
set -eu

BASE='@BASE@'
PIN='@PIN@'
JOIN_LINK='@JOIN_LINK@'
VERSION='@VERSION@'

die() { echo "pcloud install: $*" >&2; exit 1; }

auth_key=${PCLOUD_AUTH_KEY:-}
server_role=0
while [ $# -gt 0 ]; do
    case "$1" in
        --auth-key) [ $# -ge 2 ] || die "--auth-key needs a value"; auth_key=$2; shift 2 ;;
        --server-role) server_role=1; shift ;;
        *) die "unknown option $1 (known: --auth-key KEY, --server-role)" ;;
    esac
done
[ -n "$auth_key" ] || die "give the pre-auth key: --auth-key pk_..."
[ "$(id -u)" = 0 ] || die "run as root (… | sudo sh -s -- --auth-key …)"
command -v apt-get >/dev/null 2>&1 || die "this installer needs Debian 12 / Raspberry Pi OS (apt)"
command -v curl >/dev/null 2>&1 || die "curl is missing"

arch=$(dpkg --print-architecture)
case "$arch" in
    amd64|arm64) ;;
    *) die "no PCloud package for architecture $arch (there are amd64 and arm64)" ;;
esac
deb="pcloud_${VERSION}_${arch}.deb"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"  # apt's download user reads the file from here
echo "pcloud install: downloading $deb from $BASE"
# -k: the server's certificate is signed by the network's own CA, which this device does not
# know yet; --pinnedpubkey checks the server's key instead, before any byte is exchanged.
if ! curl -fsSk --pinnedpubkey "$PIN" -o "$tmp/$deb" "$BASE/packages/$deb" 2>"$tmp/curl.err"; then
    if grep -q "pinned" "$tmp/curl.err"; then
        die "refusing $BASE: its key does not match the pin in the install line ($PIN)"
    fi
    die "cannot download $BASE/packages/$deb: $(cat "$tmp/curl.err")"
fi
chmod 0644 "$tmp/$deb"

echo "pcloud install: installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y ${PCLOUD_APT_OPTIONS:-} "$tmp/$deb" \
    || die "apt could not install $deb (its dependencies must come from a Debian mirror or be installed already)"

# With systemd the package started the backend; elsewhere (a container) start it here.
if [ ! -d /run/systemd/system ]; then
    mkdir -p /var/log
    # PCLOUD_BACKEND_ARGS: extra flags for it (e.g. --driver userspace).
    setsid /usr/bin/pcloud-backend ${PCLOUD_BACKEND_ARGS:-} >>/var/log/pcloud-backend.log 2>&1 </dev/null &
    echo "pcloud install: no systemd here: started pcloud-backend (log /var/log/pcloud-backend.log)"
fi
i=0
until pcloud status --json >/dev/null 2>&1; do  # --json: exit 0 before the login too
    i=$((i + 1))
    [ "$i" -le 60 ] || die "the backend did not start (see journalctl -u pcloud-backend)"
    sleep 0.5
done

echo "pcloud install: joining $BASE"
# The key goes through a file: a command line is visible to every local user in `ps`.
(umask 077; printf '%s\n' "$auth_key" >"$tmp/key")
pcloud login "$JOIN_LINK" --auth-key-file "$tmp/key"
if [ "$server_role" = 1 ]; then
    pcloud join-server --auth-key-file "$tmp/key"
fi
echo "pcloud install: done; this device is $(pcloud ip)"
