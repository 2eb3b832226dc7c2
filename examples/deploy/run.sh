#!/usr/bin/env bash
# Two kvslim serve replicas on this machine behind HAProxy: clients use http://127.0.0.1:${LB_PORT:-8080}/v1.
# Needs haproxy (Debian: apt-get install haproxy). Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/../.."
export LB_PORT=${LB_PORT:-8080} PORT_A=${PORT_A:-8081} PORT_B=${PORT_B:-8082}
MODEL=${MODEL:-models/kvslim-tiny}
node bin/kvslim.js serve -m "$MODEL" --port "$PORT_A" --threads 1 &
node bin/kvslim.js serve -m "$MODEL" --port "$PORT_B" --threads 1 &
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT INT TERM
exec_haproxy() { haproxy -db -f examples/deploy/haproxy.cfg; }
exec_haproxy
