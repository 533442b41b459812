#!/usr/bin/env bash
# Runs every fuzz target of thinly for a bounded time each, starting from the seed corpus in
# the repository, and fails if any target finds a crash, a hang or a broken oracle.
#   fuzz/run.sh [SECONDS_PER_TARGET]   (default 20; CI runs it after the tests)
# Needs cargo-fuzz (installed here when missing) and a C++ compiler for libFuzzer; runs on the
# stable toolchain without sanitizers (-s none): the targets assert their own oracles.
# Prints one line per target: "fuzz: TARGET: N runs in S s, ok". Crash inputs are left in
# $FUZZ_WORK/TARGET/artifacts; add them to the target's seeds once fixed, as regressions.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
root="$PWD"
work="${FUZZ_WORK:-$(mktemp -d)}"
target_dir="$root/target/fuzz"   # shared by the fuzz crates, so libFuzzer builds once

run() { # FUZZ_DIR TARGET MAX_LEN
  local dir="$1" t="$2" max_len="$3"
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  local log="$work/$t/log" dict=()
  # A target may keep a libFuzzer dictionary beside its seeds (the protocol's words).
  if [ -f "$dir/seeds/$t.dict" ]; then dict=(-dict="seeds/$t.dict"); fi
  if ! (cd "$dir" && cargo fuzz run -s none --target-dir "$target_dir" "$t" \
      "$work/$t/corpus" "seeds/$t" -- -max_total_time="$secs" -max_len="$max_len" "${dict[@]}" \
      -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/$t/artifacts/" >"$log" 2>&1); then
    echo "fuzz: $t FAILED; its log: $log"
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20
    return 1
  fi
  local runs
  runs=$(grep -Eo "Done [0-9]+ runs in [0-9]+ second" "$log" | tail -1)
  echo "fuzz: $t: ${runs#Done }s, ok"
}

(cd nbd-server/fuzz && cargo fuzz build -s none --target-dir "$target_dir" >/dev/null)
(cd engine/fuzz && cargo fuzz build -s none --target-dir "$target_dir" >/dev/null)
(cd server/fuzz && cargo fuzz build -s none --target-dir "$target_dir" >/dev/null)
status=0
run nbd-server/fuzz nbd_session 65536 || status=1
run engine/fuzz metadata_open 2097152 || status=1
run engine/fuzz xml_restore 65536 || status=1
run engine/fuzz pool_ops 4096 || status=1
run server/fuzz control_request 16384 || status=1
exit $status
