#!/usr/bin/env bash
# Proves the differential tester can fail: for each planted fault (a patch to the broker,
# `difftest/planted/*.patch`, or the ones named as arguments), apply it, run exactly what
# `.ci/run` runs (the CI budget: 200 programs of 60 operations, the CI seed) and require a
# reported difference; then undo the patch. Exits non-zero if any fault goes unnoticed.
#
#   bash .ci/rabbitmq start
#   export LEPUS_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
#   export DIFFTEST_RABBITMQCTL="rabbitmqctl -n lepus-ci@localhost"   # optional, a fresh vhost
#   difftest/planted/check.sh                  # every planted fault (a release build each)
#
# Each run's whole output is kept in /tmp/difftest-planted-<name>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${LEPUS_TEST_AMQP_URL:?names the RabbitMQ to compare with}"
if [ $# -gt 0 ]; then patches=("$@"); else patches=(difftest/planted/*.patch); fi
if ! git diff --quiet -- broker; then
  echo "broker/ has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
unnoticed=0
for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  log="/tmp/difftest-planted-$name.log"
  git apply "$patch"
  trap 'git apply -R "$patch"' EXIT
  start=$(date +%s)
  if cargo test --release -p lepus-difftest --test against_rabbitmq -- --ignored --nocapture >"$log" 2>&1; then
    echo "$name: NOT NOTICED in the CI budget ($(($(date +%s) - start)) s with the build; $log)"
    unnoticed=1
  elif grep -q "diverged from RabbitMQ" "$log"; then
    kinds=$(grep -c "^[0-9]* x " "$log" || true)
    echo "$name: noticed: $(grep -o "[0-9]* of [0-9]* programs diverged" "$log" | head -1)," \
      "$kinds kind(s), $(grep -o "first: seed [0-9]* program [0-9]*" "$log" | head -1)" \
      "($(($(date +%s) - start)) s with the build; shrunk cases in $log)"
  else
    echo "$name: the run failed without a reported difference (see $log)"
    unnoticed=1
  fi
  git apply -R "$patch"
  trap - EXIT
done
exit "$unnoticed"
