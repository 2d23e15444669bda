#!/bin/sh
# memory of a pid from smaps_rollup, KiB: private = Private_Clean+Private_Dirty; anon = Private_Dirty (not file-backed text, which pods on a node share)
awk '/^Rss/{r=$2} /^Private_Clean/{c=$2} /^Private_Dirty/{d=$2} END{printf "private=%d KiB (clean %d, dirty %d) rss=%d KiB\n", c+d, c, d, r}' /proc/$1/smaps_rollup
