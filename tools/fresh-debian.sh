#!/usr/bin/env bash
# Runs a make target of vbusfs in a fresh minimal Debian: a debootstrap --variant=minbase root
# to which only `make` and `python3` are added, as a developer's new machine would be.
#
#   tools/fresh-debian.sh                      # make demo on a fresh clone of this repo's HEAD
#   tools/fresh-debian.sh -t test              # make test instead
#   tools/fresh-debian.sh -t demo my-branch    # a ref of this repo
#   tools/fresh-debian.sh -t demo /path/clone  # the HEAD of another clone
#   tools/fresh-debian.sh --dirty              # HEAD plus this work tree's uncommitted changes
#   tools/fresh-debian.sh --keep               # leave the root on disk (mounts are removed)
#   tools/fresh-debian.sh --no-host-ca         # do not copy this machine's own CAs in
#
# A developer tool, not run by CI. Needs root, debootstrap (only to make the pristine root
# once), git, tar, unshare and chroot. The pristine root is kept as a tarball
# ($FRESH_DEBIAN_TAR, default /work/roots/bookworm-min.tar; made with debootstrap from the
# first mirror in this machine's apt sources if it is missing) and unpacked anew each run.
# Every mount is made in a private mount namespace, so none can outlive the run, and the
# temporary root is removed on exit, failure or interrupt (unless --keep). This machine's own
# CA certificates (/usr/local/share/ca-certificates, e.g. a TLS proxy's) are copied to the same
# place in the root, where they count only once something installs ca-certificates, as on a
# real machine behind that proxy.
set -euo pipefail

SUITE=${FRESH_DEBIAN_SUITE:-bookworm}
TARBALL=${FRESH_DEBIAN_TAR:-/work/roots/$SUITE-min.tar}
WORKDIR=${FRESH_DEBIAN_WORKDIR:-$(dirname "$TARBALL")}
TARGET=demo
KEEP=0
HOST_CA=1
DIRTY=0
SOURCE=

usage() { sed -n '2,22s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case $1 in
    -t | --target) TARGET=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dirty) DIRTY=1; shift ;;
    --no-host-ca) HOST_CA=0; shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage 2 >&2 ;;
    *) SOURCE=$1; shift ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "fresh-debian.sh needs root (chroot, mount)" >&2; exit 1; }
REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
T0=$(date +%s)
say() { printf '[fresh-debian %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }

# The first Debian mirror this machine's apt uses (the one-line or the deb822 format).
mirror() {
  local m
  m=$(grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    grep -v -- '-security' | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' |
    head -n1) || true
  if [ -z "$m" ]; then
    m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v -- '-security' |
      awk '{print $2; exit}') || true
  fi
  [ -n "$m" ] || { echo "no Debian mirror found in /etc/apt/sources.list*" >&2; return 1; }
  echo "$m"
}

if [ ! -f "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { echo "apt-get install debootstrap first" >&2; exit 1; }
  mkdir -p "$(dirname "$TARBALL")"
  boot=$(mktemp -d "$WORKDIR/debootstrap.XXXXXX")
  say "no pristine root at $TARBALL: debootstrap --variant=minbase $SUITE"
  debootstrap --variant=minbase "$SUITE" "$boot" "$(mirror)" >"$boot.log" 2>&1 ||
    { echo "debootstrap failed, see $boot.log" >&2; rm -rf --one-file-system "$boot"; exit 1; }
  tar --numeric-owner -C "$boot" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
  rm -rf --one-file-system "$boot" "$boot.log"
fi

mkdir -p "$WORKDIR"
ROOT=$(mktemp -d "$WORKDIR/fresh-$SUITE.XXXXXX")

CHILD=
cleanup() {
  local rc=$?
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true # unshare --kill-child then ends the whole run
    wait "$CHILD" 2>/dev/null || true
  fi
  # The mounts live in the run's own mount namespace; this is a guard, not the mechanism.
  if grep -qsF " $ROOT/" /proc/self/mountinfo; then
    echo "fresh-debian.sh: something is still mounted under $ROOT; left in place" >&2
    grep -F " $ROOT/" /proc/self/mountinfo | awk '{print "  " $5}' >&2
  elif [ "$KEEP" = 1 ]; then
    say "kept the root: $ROOT"
  else
    rm -rf --one-file-system "$ROOT"
  fi
  say "total $(($(date +%s) - T0)) s; make $TARGET exit status $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "unpacking $TARBALL into $ROOT"
tar --numeric-owner -C "$ROOT" -xf "$TARBALL"

# The project: a fresh clone, never the developer's work tree with its .venv and build outputs.
# In /src, readable by all: some tests run commands as nobody with the project on sys.path.
DEST=$ROOT/src/vbusfs
if [ -n "$SOURCE" ] && [ -d "$SOURCE" ]; then
  say "cloning $SOURCE"
  git clone --quiet --no-hardlinks "$SOURCE" "$DEST"
else
  say "cloning $REPO at ${SOURCE:-HEAD}"
  git clone --quiet --no-hardlinks --no-checkout "$REPO" "$DEST"
  git -C "$DEST" checkout --quiet --detach "$(git -C "$REPO" rev-parse "${SOURCE:-HEAD}^{commit}")"
fi
if [ "$DIRTY" = 1 ]; then
  say "adding the uncommitted changes of $REPO (tracked and untracked, not ignored)"
  git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    (cd "$REPO" && xargs -0 tar --no-recursion --ignore-failed-read -cf - 2>/dev/null) |
    tar -C "$DEST" -xf -
fi
say "project at $(git -C "$DEST" log -1 --format='%h %s' | cut -c1-80)"

cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
if [ "$HOST_CA" = 1 ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi

# Inside private mount and PID namespaces: the kernel file systems, then make and python3 only,
# then the target. The mounts vanish with the namespace, and every process with the PID
# namespace, whatever happens to this script.
inner=$(
  cat <<'EOF'
set -eu
R=$1 TARGET=$2
mount --bind "$R" "$R"        # the root a mount point: unshare --propagation in it needs one
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"   # with /dev/pts, /dev/shm, /dev/fuse and /dev/net/tun
mount -t tmpfs tmpfs "$R/tmp"
mount -t tmpfs tmpfs "$R/run"
in_root() {
  chroot "$R" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
t=$(date +%s)
in_root sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends make python3 >/dev/null'
echo "[fresh-debian] make and python3 installed in $(( $(date +%s) - t )) s:" \
  "$(in_root sh -c 'make --version | head -n1; python3 -V' | tr '\n' ' ')"
t=$(date +%s)
rc=0
in_root sh -c "cd /src/vbusfs && exec make $TARGET" || rc=$?
echo "[fresh-debian] make $TARGET took $(( $(date +%s) - t )) s and exited $rc"
exit $rc
EOF
)
unshare --mount --propagation private --pid --fork --kill-child -- \
  bash -c "$inner" inner "$ROOT" "$TARGET" &
CHILD=$!
wait "$CHILD"
