#!/usr/bin/env bash
# Makes a local Debian base image for the Containerfile where no image registry can be
# reached: a debootstrap --variant=minbase root, slimmed as debian:*-slim is (no apt lists
# or caches, no docs but copyright files, no man pages or translations), then imported.
#
#   examples/container/debian-base.sh [IMAGE] [ROOT.tar]
#   make image BASE=localhost/debian-minbase:bookworm     # then build on it
#
# IMAGE defaults to localhost/debian-minbase:bookworm. ROOT.tar is an existing tarball of a
# minbase root (as tools/fresh-debian.sh keeps one); without it, debootstrap (apt-get install
# debootstrap) makes the root from the first mirror in this machine's apt sources. Needs root,
# and podman or docker. HOST_CA=1 copies this machine's own CA certificates
# (/usr/local/share/ca-certificates/*.crt) in, for a network whose TLS proxy pip must trust:
# ca-certificates, installed in the builder stage, then adds them to the system bundle.
set -euo pipefail

IMAGE=${1:-localhost/debian-minbase:bookworm}
TARBALL=${2:-}
SUITE=${SUITE:-bookworm}
ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "needs podman or docker (apt-get install podman)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (debootstrap, file ownership)" >&2; exit 1; }

ROOT=$(mktemp -d)
trap 'rm -rf --one-file-system "$ROOT"' EXIT

if [ -n "$TARBALL" ]; then
  tar --numeric-owner -C "$ROOT" -xf "$TARBALL"
else
  mirror=$(grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    grep -v -- '-security' | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' |
    head -n1) || true
  [ -n "$mirror" ] || mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources |
    grep -v -- '-security' | awk '{print $2; exit}') || true
  [ -n "$mirror" ] || { echo "no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$mirror"
fi

if [ "${HOST_CA:-0}" = 1 ]; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi

# What later apt-get installs in the image leave out, as in the official slim images.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
cat >"$ROOT/etc/apt/apt.conf.d/slim" <<'EOF'
APT::Install-Recommends "false";
Acquire::GzipIndexes "true";
Acquire::Languages "none";
EOF
find "$ROOT/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/{man,info,groff,lintian,locale}/* \
  "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
  "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/root/.bash_history
: >"$ROOT/etc/resolv.conf"

tar --numeric-owner -C "$ROOT" -c . | "$ENGINE" import - "$IMAGE"
"$ENGINE" image ls "$IMAGE"
