#!/bin/sh
# Makes the Debian root filesystem behind clipper/base (run as root, with network to the mirror).
#
#   mkrootfs.sh ROOTFS_DIR DEBS_DIR SUITE MIRROR [CACHE_DIR]
#
# ROOTFS_DIR  gets a `debootstrap --variant=minbase` tree with python3, python3-pip and
#             ca-certificates; import it with `tar -C ROOTFS_DIR -c . | docker import - clipper/base:TAG`.
# DEBS_DIR    gets the .deb files that redis-server needs on top of that tree (installed with
#             `dpkg -i` by containers/redis/Dockerfile, so that `docker build` needs no network).
# CACHE_DIR   optional debootstrap package cache (kept between runs to skip downloads).
set -eu
ROOTFS=$1
DEBS=$2
SUITE=$3
MIRROR=$4
CACHE=${5:-}
INCLUDE=python3,python3-pip,ca-certificates

command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
mkdir -p "$ROOTFS" "$DEBS"
set -- --variant=minbase --include="$INCLUDE"
if [ -n "$CACHE" ]; then mkdir -p "$CACHE"; set -- "$@" --cache-dir="$(cd "$CACHE" && pwd)"; fi
echo "debootstrap $* $SUITE $ROOTFS $MIRROR"
debootstrap "$@" "$SUITE" "$ROOTFS" "$MIRROR"

# apt sources inside the image: the same mirror and suite (only reachable where the mirror is)
rm -f "$ROOTFS/etc/apt/sources.list"
mkdir -p "$ROOTFS/etc/apt/sources.list.d"
cat > "$ROOTFS/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

# redis-server and whatever it needs beyond this tree, fetched now (no network in docker build)
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
chroot "$ROOTFS" apt-get clean
chroot "$ROOTFS" apt-get -q update
chroot "$ROOTFS" apt-get -q -y --no-install-recommends install --download-only redis-server
mv "$ROOTFS"/var/cache/apt/archives/*.deb "$DEBS"/
ls "$DEBS"

# slim down: package lists, caches, docs and man pages are not needed at run time
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log \
       "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
       "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
: > "$ROOTFS/etc/resolv.conf"
: > "$ROOTFS/etc/hostname"
# like Debian's official images: no services started by package scripts, no docs in later installs
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d"
cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/01-clipper-nodoc" <<CFG
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
CFG
chroot "$ROOTFS" python3 -c 'import platform, sys; print("python %d.%d" % sys.version_info[:2]); print("libc %s %s" % platform.libc_ver())'
echo "rootfs ready: $(du -sh "$ROOTFS" | cut -f1)"
