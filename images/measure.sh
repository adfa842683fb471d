#!/bin/sh
# Measures each image's build time and size and writes them into docs/images.md, between
# the lines `<!-- measured: begin -->` and `<!-- measured: end -->` (`make images-measure`).
#
# usage: images/measure.sh DOC NAME...
#   cold:   `make image-NAME` with the engine's layer cache off (--no-cache), under a
#           throw-away tag and stamp folder removed afterwards: every RUN step again,
#           the base image and the host's downloads (~/.cache/dagd: wheels, the broker's
#           cargo build) kept. MEASURE_COLD="names" narrows it ("" for none).
#   cached: `make image-NAME` again without its stamp: every step from the layer cache.
#   size:   the image's size as `docker images` shows it.
# The base (debootstrap) is measured cold too, under a throw-away tag, unless
# MEASURE_COLD leaves out "base".
set -eu
doc=$1; shift
make=${MAKE:-make}
cold_names=${MEASURE_COLD-base $*}
tag=measure-$$
tmp=build/images-measure-$$
rows=$(mktemp)
trap 'rm -rf "$tmp" "$rows"' EXIT INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
human() {   # seconds -> "12.3 s" or "4 min 05 s"
    awk -v s="$1" 'BEGIN { if (s < 60) printf "%.1f s", s; else printf "%d min %02d s", s / 60, s % 60 }'
}
mb() { awk -v b="$1" 'BEGIN { if (b >= 1e9) printf "%.2f GB", b / 1e9; else printf "%.1f MB", b / 1e6 }'; }
cold_wanted() { case " $cold_names " in *" $1 "*) return 0;; esac; return 1; }
mk() { $make -s --no-print-directory "$@" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; exit 1; }; }

mkdir -p "$tmp"
if cold_wanted base; then
    t0=$(now)
    sh images/base/make-base.sh "dagd-measure/debian:$tag" >/dev/null 2>&1
    t1=$(now)
    size=$(docker image inspect -f '{{.Size}}' "dagd-measure/debian:$tag")
    docker rmi "dagd-measure/debian:$tag" >/dev/null
    echo "| base (\`dagd-base/debian:bookworm\`, debootstrap) | $(mb "$size") | $(human "$(secs "$t0" "$t1")") | 0 s: it exists |" >>"$rows"
    echo "measure: base" >&2
fi
for n in "$@"; do
    cold=-
    if cold_wanted "$n"; then
        t0=$(now)
        mk IMG="$tmp" IMAGE_TAG="$tag" DOCKER_NOCACHE=--no-cache DOCKER_QUIET= "image-$n"
        t1=$(now)
        cold=$(human "$(secs "$t0" "$t1")")
        # the throw-away tag, then the images of this build's steps (a build stage's
        # are no parents of the tagged image), newest first
        docker rmi "dagd/$n:$tag" >/dev/null
        sed -n 's/^ ---> \([0-9a-f]\{12\}\)$/\1/p' "$tmp/$n.stamp" | tac |
            xargs -r docker rmi >/dev/null 2>&1 || true
    fi
    rm -f "build/images/$n.stamp"
    t0=$(now)
    mk "image-$n"
    t1=$(now)
    size=$(docker image inspect -f '{{.Size}}' "dagd/$n:${IMAGE_TAG:-local}")
    echo "| \`dagd/$n\` | $(mb "$size") | $cold | $(human "$(secs "$t0" "$t1")") |" >>"$rows"
    echo "measure: $n" >&2
done

# the rows of the table already there, in their order, those measured now replaced (a
# cold time not measured now kept); new ones after them
sed -n '/^<!-- measured: begin -->$/,/^<!-- measured: end -->$/p' "$doc" | grep '^| [b`]' >"$tmp/old" || true
{
    echo "<!-- measured: begin -->"
    echo "| image | size | cold build | cached build |"
    echo "|---|---|---|---|"
    awk -F' [|] ' 'FNR == NR { new[$1] = $0; order[++n] = $1; next }
                   ($1 in new) { row = new[$1]; done[$1] = 1
                                 # a cold time not measured now: the one measured before
                                 split(row, f, / [|] /)
                                 if (f[3] == "-") row = f[1] " | " f[2] " | " $3 " | " f[4]
                                 print row; next }
                   { print }
                   END { for (i = 1; i <= n; i++) if (!(order[i] in done)) print new[order[i]] }' \
        "$rows" "$tmp/old"
    echo
    echo "Measured by \`make images-measure\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(docker version -f '{{.Server.Version}}' 2>/dev/null | sed 's/^/Docker /')."
    echo "<!-- measured: end -->"
} >"$tmp/table"
awk -v table="$tmp/table" '
    /^<!-- measured: begin -->$/ { while ((getline l < table) > 0) print l; skip = 1; next }
    /^<!-- measured: end -->$/   { skip = 0; next }
    !skip' "$doc" >"$tmp/doc"
grep -q '^<!-- measured: begin -->$' "$doc" || { echo "measure: no measured: begin line in $doc" >&2; exit 1; }
cat "$tmp/doc" >"$doc"
