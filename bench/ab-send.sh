#!/usr/bin/env bash
# A/B: the same send bench against two builds, alternating, in one session (the machines
# are noisy; only a comparison in one run means anything). Build the old one with e.g.
#   git worktree add /tmp/troupe-old COMMIT && (cd /tmp/troupe-old && CARGO_TARGET_DIR=/tmp/troupe-old-target cargo build --release -p troupe -p troupe-bench)
set -u
old=${OLD:-/tmp/troupe-old-target/release}   # the old build's troupe and bench
new=${NEW:-target/release}
# A load generator sends far faster than a person: lift the send limits, as run-all.sh does.
for limit in CONNECTION_SENDS USER_SENDS; do
  export TROUPE_ACTORS__RATE_LIMITS__${limit}__PER_SECOND=1000000.0 TROUPE_ACTORS__RATE_LIMITS__${limit}__BURST=1000000.0
done
run() { # label node_bin bench_bin
  data=$(mktemp -d)
  "$2" serve --listen 127.0.0.1:7878 --console-listen 127.0.0.1:7879 --password-cost test --data "$data" > "$data.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "troupe ready" "$data.log" && break; sleep 0.1; done
  "$3" send --duration 15 2>&1 | grep -E "durable acked|ack latency" | sed "s/^/$1 /"
  kill $pid; wait $pid 2>/dev/null; rm -rf "$data" "$data.log"
}
for round in 1 2; do
  run old "$old/troupe" "$old/bench"
  run new "$new/troupe" "$new/bench"
done
