#!/usr/bin/env bash
# Runs every bench scenario against fresh release nodes on this machine and writes the
# results (JSON and SVG pictures) to bench/results/<name>/. This is how the figures in
# BENCHMARKS.md were produced:
#
#   bench/run-all.sh <name> [scenario...]     e.g. bench/run-all.sh 2026-11-30 fanout overload
#
# Scenarios: connections fanout overload send joins sync redpacket media (all when none are
# named); slow-consumer and admission (issue 8's hardening runs); floor (no node: what one
# loopback write per delivery costs on this machine, fanout's ceiling); and
# cluster-fanout (two nodes on a fresh PostgreSQL database, members spread over both; needs
# PostgreSQL on 127.0.0.1:5432; not in the default set).
#
# For an A/B of two builds, NODE_BIN and BENCH_BIN name binaries built elsewhere (copies
# of another commit's target/release/troupe and bench); nothing is built then.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-$(date +%Y-%m-%d)}
shift || true
scenarios=${*:-connections fanout overload send joins sync redpacket media}
out=bench/results/$name
mkdir -p "$out"
if [ -z "${NODE_BIN:-}" ]; then
  cargo build --release -q -p troupe -p troupe-bench
fi
node_bin=${NODE_BIN:-target/release/troupe}
# A load generator sends far faster than a person: lift the per-connection and per-user send
# limits (actors.rate_limits) for the nodes measured here.
for limit in CONNECTION_SENDS USER_SENDS; do
  export TROUPE_ACTORS__RATE_LIMITS__${limit}__PER_SECOND=1000000.0 TROUPE_ACTORS__RATE_LIMITS__${limit}__BURST=1000000.0
done
bench_bin=${BENCH_BIN:-target/release/bench}
data=$(mktemp -d)
node_pid=
cluster_pids=
trap 'kill $node_pid $cluster_pids 2>/dev/null || true; rm -rf "$data" "$data.log" "$data".n*' EXIT

start_node() { # fresh unless "keep" is given; then extra settings, NAME=value ...
  if [ "${1:-}" = keep ]; then shift; else rm -rf "$data"; mkdir -p "$data"; fi
  env "$@" "$node_bin" serve --listen 127.0.0.1:7878 --console-listen 127.0.0.1:7879 \
    --password-cost test --data "$data" > "$data.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 100); do grep -q "troupe ready" "$data.log" && return; sleep 0.1; done
  echo "node did not start"; cat "$data.log"; exit 1
}
stop_node() { kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; }

start_cluster() { # two nodes on a fresh PostgreSQL database
  db=troupe_bench_$$
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  for n in 1 2; do
    TROUPE_CLUSTER__SECRET=bench "$node_bin" serve --node-id $n --listen 127.0.0.1:787$n \
      --console-listen 127.0.0.1:788$n --cluster-listen 127.0.0.1:790$n \
      --seeds 127.0.0.1:7901,127.0.0.1:7902 --password-cost test \
      --postgres "postgres://postgres@127.0.0.1:5432/$db" > "$data.n$n.log" 2>&1 &
    cluster_pids="$cluster_pids $!"
  done
  for n in 1 2; do
    for _ in $(seq 100); do grep -q "troupe ready" "$data.n$n.log" && break; sleep 0.1; done
  done
  sleep 2 # heartbeats: both nodes up in each other's view
}
stop_cluster() {
  kill $cluster_pids 2>/dev/null || true; wait $cluster_pids 2>/dev/null || true; cluster_pids=
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db"
}

for scenario in $scenarios; do
  echo "== $scenario"
  case $scenario in
    connections)
      start_node
      "$bench_bin" accounts --count 19000 --tokens "$data/tokens.txt"
      cp "$data/tokens.txt" "$data.tokens"; stop_node
      # Restart so the baseline holds nothing left over from signing up.
      start_node keep; mv "$data.tokens" "$data/tokens.txt"
      "$bench_bin" connections --tokens "$data/tokens.txt" --hold 10 --out "$out/connections" ;;
    floor)    "$bench_bin" floor --duration 20 --out "$out/floor" ;;
    fanout)   start_node; "$bench_bin" fanout --warmup 3 --duration 30 --out "$out/fanout-100k" ;;
    overload) start_node; "$bench_bin" fanout --rate 100 --warmup 3 --duration 30 --out "$out/fanout-overload" ;;
    send)     start_node; "$bench_bin" send --duration 20 --out "$out/send" ;;
    slow-consumer)
      # The 100k/s fan-out without and then with one member that stops reading, on the same
      # settings: a small outbox bound and send buffer, so the node drops the stalled member
      # within the run (with the defaults, 8192 events after megabytes of kernel buffer, it
      # takes minutes at 200 events/s).
      # SLOW_CONSUMER_PAIRS=N runs N pairs, alternating which half of a pair comes first
      # (0 1, 1 0, ...) so that drift over the runs does not favour either side.
      pairs=${SLOW_CONSUMER_PAIRS:-1}
      for pair in $(seq "$pairs"); do
        order="0 1"; [ $((pair % 2)) = 0 ] && order="1 0"
        suffix=""; [ "$pairs" -gt 1 ] && suffix="-pair$pair"
        for stalled in $order; do
          start_node TROUPE_ACTORS__OUTBOX_MAX_EVENTS=1024 TROUPE_GATEWAY__SOCKET_SEND_BUFFER_BYTES=65536
          "$bench_bin" fanout --warmup 3 --duration 40 --stalled $stalled --out "$out/fanout-100k-stalled-$stalled$suffix"
          stop_node
        done
      done
      continue ;;
    admission)
      # Open-loop sends: 20k/s, then 2x what `send` measured (~52k/s), then 20k/s again.
      # A 128 MiB page cache, so the node's memory shows the queues rather than the store's cache.
      start_node TROUPE_STORE__EMBEDDED_PAGE_CACHE_BYTES=134217728
      "$bench_bin" admission --base-rate 20000 --rate 105000 --phase 15 --out "$out/admission" ;;
    joins)    start_node; "$bench_bin" joins --out "$out/joins" ;;
    sync)     start_node; "$bench_bin" sync --clients 2000 --groups 20 --missed 500 --out "$out/sync" ;;
    redpacket) start_node; "$bench_bin" redpacket --members 500 --shares 100 --packets 10 --out "$out/redpacket" ;;
    media)    start_node; "$bench_bin" media --mib 200 --downloads 4 --out "$out/media" ;;
    cluster-fanout)
      start_cluster
      "$bench_bin" fanout --url ws://127.0.0.1:7871/ws,ws://127.0.0.1:7872/ws \
        --console 127.0.0.1:7881,127.0.0.1:7882 --warmup 3 --duration 30 --out "$out/cluster-fanout-100k"
      stop_cluster; continue ;;
    *) echo "unknown scenario $scenario"; exit 2 ;;
  esac
  stop_node
done
echo "results in $out"
