#!/usr/bin/env bash
# bench.sh: throughput of mxfront against the smtp-source -> smtp-sink
# ceiling on this machine.
#
# For each message size (1 KiB and 100 KiB):
#   1. ceiling: smtp-source (SESSIONS parallel sessions) straight into
#      smtp-sink; messages/s until smtp-source has had every 250.
#   2. mxfront: the same load at mxfront, whose transport points at the
#      sink; "accepted" is messages/s until smtp-source is done (everything
#      queued with fsync), "delivered" until the sink has received all N.
#      The ratio is delivered / ceiling.
#
# Then the DNS list benchmark (below; RBL=0 skips it), and recipients
# verified via LDAP, cold and warm cache, against a table file
# (scripts/bench-ldap.sh; LDAP=0 skips it, N_LDAP sets the count).
# Then a realistic restriction set (16 restrictions, a 100 000-line
# access map, 1 000 header_checks) against none, alternating
# (scripts/bench-policy.sh; POLICY=0 skips it, N_POLICY sets the count).
# Then the queue's drain rate with 20 000 messages for 4 units (one slow)
# and the memory of 100 000 deferred messages (scripts/bench-queue.sh;
# QUEUE=0 skips it, N_DRAIN and N_DEFERRED set the counts).
#
# Environment: N_SMALL (default 20000), N_LARGE (2000), SESSIONS (20),
# PHASE_TIMEOUT seconds per phase (300), KEEP=1 keeps the work dir.
# Needs smtp-source and smtp-sink (Debian package postfix); builds
# bin/mxfront with `go build`.
set -euo pipefail
cd "$(dirname "$0")/.."

N_SMALL=${N_SMALL:-20000}
N_LARGE=${N_LARGE:-2000}
SESSIONS=${SESSIONS:-20}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-300}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
findprog() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || die "$1 not found (Debian package postfix; run scripts/install-deps.sh)"; }
SMTP_SINK=$(findprog smtp-sink)
SMTP_SOURCE=$(findprog smtp-source)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mxfront-bench.XXXXXX")
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ "${KEEP:-0}" = 1 ]; then
		echo "bench: work dir kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { d = b - a; if (d <= 0) d = 1e-9; printf "%.0f", n / d }'; }

# greets HOST PORT NAME: does an SMTP server greet with NAME on the port?
greets() {
	local line=""
	{ exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
	read -r -t 2 line <&3 || true
	printf 'QUIT\r\n' >&3 2>/dev/null || true
	exec 3<&- 3>&-
	[[ $line == 220*"$3"* ]]
}

# start_sink NAME: starts smtp-sink on a free port; sets SINK_PORT,
# SINK_LOG, SINK_PID. Tries random ports, a bounded number of times.
start_sink() {
	local name=$1 try port pid
	local user_opt=()
	[ "$(id -u)" -eq 0 ] && user_opt=(-u "$(id -un)")
	SINK_LOG="$WORK/$name.log"
	for try in $(seq 1 20); do
		port=$((20000 + RANDOM % 40000))
		greets 127.0.0.1 "$port" "" && continue # taken
		"$SMTP_SINK" "${user_opt[@]}" -c -h "$name" "127.0.0.1:$port" 1000 >"$SINK_LOG" 2>&1 &
		pid=$!
		for _ in $(seq 1 100); do # up to 5 s
			kill -0 "$pid" 2>/dev/null || break
			if greets 127.0.0.1 "$port" "$name"; then
				PIDS+=("$pid")
				SINK_PORT=$port SINK_PID=$pid
				return 0
			fi
			sleep 0.05
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	die "could not start smtp-sink: $(tail -c 300 "$SINK_LOG")"
}

# sink_count: messages the sink has received so far ("." seen), from the
# -c counters "sess=N quit=N mesg=N" it rewrites with CR.
sink_count() {
	local c
	c=$(tail -c 300 "$SINK_LOG" | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2)
	echo "${c:-0}"
}

# wait_sink N: wait until the sink counted at least N messages, at most
# PHASE_TIMEOUT seconds.
wait_sink() {
	local want=$1 deadline=$((SECONDS + PHASE_TIMEOUT))
	while [ "$(sink_count)" -lt "$want" ]; do
		[ "$SECONDS" -lt "$deadline" ] || die "sink has $(sink_count) of $want messages after ${PHASE_TIMEOUT}s"
		sleep 0.05
	done
}

# source N LEN PORT: smtp-source load, bounded by PHASE_TIMEOUT.
source_load() {
	timeout "$PHASE_TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$1" -l "$2" \
		-f bench@remote.test -t rcpt@example.test "127.0.0.1:$3" ||
		die "smtp-source -m $1 -l $2 at port $3 failed (exit $?)"
}

# ceiling N LEN: prints messages/s of smtp-source -> smtp-sink.
ceiling() {
	local n=$1 len=$2 before t0 t1
	before=$(sink_count)
	t0=$(now)
	source_load "$n" "$len" "$SINK_PORT"
	t1=$(now)
	wait_sink $((before + n))
	rate "$n" "$t0" "$t1"
}

# --- mxfront ------------------------------------------------------------

MX_PORT="" MX_PID=""

# launch_mxfront DIR MAPS EXTRA: writes DIR/mxfront.toml relaying
# example.test to the sink, with relay_recipient_maps = [MAPS] and the
# EXTRA configuration lines, starts bin/mxfront on a free port and prints
# "port pid". Every bench that runs mxfront starts it here.
launch_mxfront() {
	local dir=$1 maps=$2 extra=$3 try port pid
	mkdir -p "$dir"
	printf 'example.test smtp:[127.0.0.1]:%s\n' "$SINK_PORT" >"$dir/transport"
	for try in $(seq 1 20); do
		port=$((20000 + RANDOM % 40000))
		greets 127.0.0.1 "$port" "" && continue
		cat >"$dir/mxfront.toml" <<-EOF
			myhostname = "mx.bench.test"
			mynetworks = []
			relay_domains = ["example.test"]
			relay_recipient_maps = [$maps]
			transport_maps = ["texthash:$dir/transport"]
			queue_directory = "$dir/queue"
			smtpd_peername_lookup = false
			$extra

			[[listen]]
			address = "127.0.0.1:$port"
			maxproc = $((SESSIONS * 2))

			[log]
			level = "warn"
		EOF
		bin/mxfront serve -config "$dir/mxfront.toml" >"$dir/mxfront.log" 2>&1 &
		pid=$!
		for _ in $(seq 1 200); do # up to 10 s
			kill -0 "$pid" 2>/dev/null || break
			if greets 127.0.0.1 "$port" "mx.bench.test"; then
				echo "$port $pid"
				return 0
			fi
			sleep 0.05
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		grep -q "address already in use" "$dir/mxfront.log" || break
	done
	die "could not start mxfront in $dir: $(tail -c 600 "$dir/mxfront.log")"
}

# median N...: the median of the numbers.
median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# start_mxfront: builds bin/mxfront and starts it relaying example.test to
# the sink. Sets MX_PORT and MX_PID.
start_mxfront() {
	[ -d cmd/mxfront ] || die "cmd/mxfront does not exist"
	"$GO" build -o bin/mxfront ./cmd/mxfront || die "go build ./cmd/mxfront failed"
	local dir="$WORK/mx"
	mkdir -p "$dir"
	printf 'rcpt@example.test OK\n' >"$dir/relay_recipients"
	read -r MX_PORT MX_PID < <(launch_mxfront "$dir" "\"texthash:$dir/relay_recipients\"" "")
	[ -n "$MX_PORT" ] || die "could not start mxfront"
	PIDS+=("$MX_PID")
}

# through_mxfront N LEN CEIL: prints "accepted/s delivered/s ratio".
through_mxfront() {
	local n=$1 len=$2 ceil=$3 before t0 t1 t2
	before=$(sink_count)
	t0=$(now)
	source_load "$n" "$len" "$MX_PORT"
	t1=$(now)
	wait_sink $((before + n))
	t2=$(now)
	local acc del
	acc=$(rate "$n" "$t0" "$t1")
	del=$(rate "$n" "$t0" "$t2")
	echo "$acc $del $(awk -v d="$del" -v c="$ceil" 'BEGIN { printf "%.2f", d / c }')"
}

# --- main ---------------------------------------------------------------

echo "bench: $(nproc) CPUs, $SESSIONS sessions, one connection per message"
start_sink bench-sink

declare -A CEIL
for spec in "1024 $N_SMALL" "102400 $N_LARGE"; do
	set -- $spec
	CEIL[$1]=$(ceiling "$2" "$1")
	printf 'ceiling  %6d bytes x %6d: %8s msgs/s  (smtp-source -> smtp-sink)\n' "$1" "$2" "${CEIL[$1]}"
done

if [ "${CEILING_ONLY:-0}" = 1 ]; then
	exit 0
fi

start_mxfront
for spec in "1024 $N_SMALL" "102400 $N_LARGE"; do
	set -- $spec
	out=$(through_mxfront "$2" "$1" "${CEIL[$1]}")
	read -r acc del ratio <<<"$out"
	printf 'mxfront  %6d bytes x %6d: %8s msgs/s accepted, %8s msgs/s delivered, %s of ceiling\n' "$1" "$2" "$acc" "$del" "$ratio"
done

# --- Restrictions -------------------------------------------------------
if [ "${POLICY:-1}" = 1 ]; then
	# shellcheck source=scripts/bench-policy.sh
	. scripts/bench-policy.sh
fi

# --- DNS lists ----------------------------------------------------------
# Three reject_rbl_client lists, (a) all healthy, (b) one never answering;
# every session from a new client address. scripts/rblbench prints
# throughput after the first dnsbl_timeout window and p99 session times.
# RBL_MEASURE: how long each phase runs after its first window (default
# 10s); RBL_TIMEOUT: dnsbl_timeout (3s); RBL=0 skips.
if [ "${RBL:-1}" = 1 ]; then
	timeout "$PHASE_TIMEOUT" "$GO" run ./scripts/rblbench -mxfront bin/mxfront -sink "127.0.0.1:$SINK_PORT" \
		-work "$WORK/rbl" -measure "${RBL_MEASURE:-10s}" -c "$SESSIONS" -timeout "${RBL_TIMEOUT:-3s}" ||
		die "rblbench failed (exit $?)"
fi

# --- Queue: drain rate, memory of deferred mail ---------------------------
if [ "${QUEUE:-1}" = 1 ]; then
	# shellcheck source=scripts/bench-queue.sh
	. scripts/bench-queue.sh
fi

# --- LDAP recipient verification -----------------------------------------
if [ "${LDAP:-1}" = 1 ]; then
	# shellcheck source=scripts/bench-ldap.sh
	. scripts/bench-ldap.sh
fi
