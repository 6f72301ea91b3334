#!/usr/bin/env bash
# Regenerates data/kjv-new-testament.txt.gz: the New Testament of the King
# James Version (1611; public domain, its copyright long expired) from
# Debian's bible-kjv-text package, one verse per line under each chapter's
# heading, verse numbers dropped. Run from the repository root as root (or
# with apt-get download rights); checks the text's sha256.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download bible-kjv bible-kjv-text >/dev/null)
for d in "$tmp"/*.deb; do dpkg -x "$d" "$tmp/x"; done
"$tmp/x/usr/bin/bible" -p "$tmp/x/usr/lib" -m 8192 -l100000 "Matthew1:1-Revelation22:21" \
  | sed -E 's/^ +[0-9]+ //' >"$tmp/kjv-nt.txt"
echo "2ae7c24f3576f9a7012439a08536cec2217f8eafb1c457491c0ebfaeca0f0648  $tmp/kjv-nt.txt" | sha256sum -c -
gzip -9 -n <"$tmp/kjv-nt.txt" >data/kjv-new-testament.txt.gz
