#!/usr/bin/env bash
# bench-queue.sh: the queue's drain rate and the memory of deferred mail.
# Sourced by scripts/bench.sh (QUEUE=0 skips it); runs on its own too:
#   scripts/bench-queue.sh
#
# 1. Drain: N_DRAIN messages (default 20000) queued for 4 units while the
#    queue is stopped, then delivered over SMTP by the real scheduler and
#    relay to 4 in-process units on loopback; once with 4 fast units, once
#    with unit 4 taking 50 ms per message. Reports msgs/s and how fast the
#    3 healthy units drain beside the slow one relative to the all-fast
#    run (the ratio, measured within one run: >= 1 means no slowdown).
#    (BenchmarkQueueDrain, queue/relay/drain_bench_test.go)
# 2. Memory: N_DEFERRED deferred messages (default 100000) recovered from
#    the spool and held by a running queue: live heap per message,
#    recovery time, and a full `mxfront queue list` pass.
#    (BenchmarkDeferredMemory, queue/deferred_bench_test.go)

if [ -z "${BASH_SOURCE[1]:-}" ]; then
	set -euo pipefail
	cd "$(dirname "$0")/.."
	GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
	PHASE_TIMEOUT=${PHASE_TIMEOUT:-300}
	die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
fi

N_DRAIN=${N_DRAIN:-20000}
N_DEFERRED=${N_DEFERRED:-100000}

# metric OUTPUT UNIT: the value reported for UNIT on the Benchmark line.
metric() {
	printf '%s\n' "$1" | awk -v u="$2" '/^Benchmark/ { for (i = 3; i < NF; i++) if ($(i + 1) == u) print $i }'
}

out=$(MXFRONT_DRAIN_N=$N_DRAIN timeout "$((PHASE_TIMEOUT * 3))" "$GO" test -run '^$' -bench 'QueueDrain$' -benchtime 1x ./queue/relay 2>&1) ||
	die "queue drain benchmark failed: $(printf '%s' "$out" | tail -n 20)"
printf 'queue drain %6d msgs, 4 units: %6.0f msgs/s all fast; unit 4 at 50 ms/msg: %6.0f msgs/s overall, healthy units %6.0f msgs/s (%.2f of all-fast), slow unit %4.0f msgs/s\n' \
	"$N_DRAIN" "$(metric "$out" fast-msgs/s)" "$(metric "$out" with-slow-msgs/s)" \
	"$(metric "$out" healthy-beside-slow-msgs/s)" "$(metric "$out" healthy-ratio)" "$(metric "$out" slow-unit-msgs/s)"

out=$(MXFRONT_DEFERRED_N=$N_DEFERRED timeout "$((PHASE_TIMEOUT * 3))" "$GO" test -run '^$' -bench 'DeferredMemory$' -benchtime 1x ./queue 2>&1) ||
	die "deferred memory benchmark failed: $(printf '%s' "$out" | tail -n 20)"
printf 'queue memory %6d deferred msgs: %.1f MiB live heap (%.0f bytes/msg), %.0f MiB from the OS; recovery %.1fs, full list %.1fs\n' \
	"$N_DEFERRED" "$(metric "$out" heap-MiB)" "$(metric "$out" heap-B/msg)" "$(metric "$out" sys-MiB)" \
	"$(metric "$out" recovery-s)" "$(metric "$out" list-s)"
