#!/bin/sh
# kresd front; CFG defaults to kresd-front.lua; pid in run/kresd.pid
cd ${WORK:-/tmp/dns-front-feed}; mkdir -p run/kresd; K=${NAME:-kresd}; mkdir -p run/$K; KRESD_CACHE=${WORK:-/tmp/dns-front-feed}/run/$K setsid kresd -n -c ${WORK:-/tmp/dns-front-feed}/${CFG:-kresd-front.lua} run/$K > run/$K.log 2>&1 < /dev/null & echo $! > run/$K.pid
