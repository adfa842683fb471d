#!/bin/sh
# Copies a binary (stripped) and every shared library it links, with the dynamic loader,
# into an empty root; adds the time zone database and the CA bundle, the user dagd
# (10001) and its state and DAGs folders. Runs in the build stage of images/dagd/Dockerfile.
set -eu
bin=$1 out=$2
mkdir -p "$out/usr/bin" "$out/etc/ssl/certs" "$out/usr/share" "$out/tmp" "$out/dags" "$out/var/lib/dagd"
strip -o "$out/usr/bin/dagd" "$bin"
ldd "$bin" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
done
# zoneinfo without its duplicate posix/ and right/ trees
cp -a /usr/share/zoneinfo "$out/usr/share/"
rm -rf "$out/usr/share/zoneinfo/posix" "$out/usr/share/zoneinfo/right"
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
printf 'root:x:0:0::/:/nonexistent\ndagd:x:10001:10001::/var/lib/dagd:/nonexistent\n' >"$out/etc/passwd"
printf 'root:x:0:\ndagd:x:10001:\n' >"$out/etc/group"
chmod 1777 "$out/tmp"
chown 10001:10001 "$out/var/lib/dagd" "$out/dags"
chmod 0700 "$out/var/lib/dagd"
