#!/bin/sh
# Makes the base image the project's Dockerfiles build on when no registry can be
# reached: a minimal Debian bookworm root (debootstrap --variant=minbase) imported into
# the engine as one layer. Does nothing when the image exists already. See docs/images.md.
#
# usage: images/base/make-base.sh [IMAGE]     (default dagd-base/debian:bookworm)
# The Debian mirror is the one apt on this host uses (DEBIAN_MIRROR overrides it).
set -eu
image=${1:-dagd-base/debian:bookworm}
suite=bookworm

if docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "make-base: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
}

# The first plain Debian archive apt already uses: one-line (deb URL suite ...) or
# deb822 (URIs: URL) sources, security and updates archives excluded.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }
             /^URIs:/    { print $2 }' |
        grep -v -e security -e updates | grep '/debian/*$' | head -n 1)
fi
if [ -z "$mirror" ]; then
    echo "make-base: no Debian mirror found in apt's sources; set DEBIAN_MIRROR" >&2
    exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/dagd-base.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM
echo "make-base: debootstrap --variant=minbase $suite from $mirror" >&2
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"
# apt in a build step needs no recommends and leaves no package lists behind
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$image" >/dev/null
echo "make-base: imported $image" >&2
