# bench-policy.sh: throughput with a realistic restriction set against the
# same load without restrictions, in one run. Sourced by scripts/bench.sh
# (POLICY=0 skips it), whose helpers and sink it uses.
#
# Two mxfront instances relay example.test to the sink:
#   plain:  the default restrictions (smtpd_relay_restrictions only)
#   policy: 16 restrictions at every stage (client, HELO, sender, relay,
#           recipient, DATA), every check_*_access looking keys up in one
#           100 000-line texthash access map, and a 1 000-line regexp
#           header_checks (mostly "^Subject:.*phrase" rules, as real
#           ones are)
# N_POLICY 1 KiB messages (default 10000), SESSIONS parallel sessions,
# one message per connection (smtp-source -M names the client), plain and
# policy alternating POLICY_ROUNDS times (default 3); it prints the
# medians of messages/s accepted (until smtp-source is done) and
# delivered (until the sink has them all), and policy/plain (target:
# >= 0.90).

bench_policy() {
	local n=${N_POLICY:-10000}
	local dir="$WORK/policy"
	mkdir -p "$dir"

	# 100 000 access entries: addresses, networks, host names, domains
	# and addresses of senders, none of which is the benchmark's.
	awk 'BEGIN {
		for (i = 0; i < 40000; i++) printf "10.%d.%d.%d REJECT listed client %d\n", int(i / 65536) % 256, int(i / 256) % 256, i % 256, i
		for (i = 0; i < 10000; i++) printf "172.%d.%d REJECT listed network %d\n", 16 + int(i / 256) % 16, i % 256, i
		for (i = 0; i < 20000; i++) printf "host%d.spammer%d.example REJECT listed name\n", i, i % 97
		for (i = 0; i < 10000; i++) printf "spamdomain%d.example REJECT listed domain\n", i
		for (i = 0; i < 20000; i++) printf "user%d@spamdomain%d.example REJECT listed sender\n", i, i % 500
	}' >"$dir/access"
	# 1 000 header_checks rules.
	awk 'BEGIN {
		for (i = 0; i < 600; i++) printf "/^Subject:.*\\b(cheap|free)\\s+offer%d\\b/ REJECT spam subject %d\n", i, i
		for (i = 0; i < 200; i++) printf "/^From:.*@bulk%d\\.example/ REJECT bulk sender %d\n", i, i
		for (i = 0; i < 100; i++) printf "/^X-Mailer:.*massmailer %d/ REJECT bulk mailer\n", i
		for (i = 0; i < 50; i++) printf "/^Message-Id:.*@spamhost%d\\.example/ REJECT forged id\n", i
		for (i = 0; i < 50; i++) printf "/^Content-Type:.*name=\"?[^\"]*\\.(exe|scr|pif)%d/ REJECT attachment\n", i
	}' >"$dir/header_checks"

	local plain_port plain_pid policy_port policy_pid restrictions
	restrictions="smtpd_client_restrictions = [\"permit_mynetworks\", \"check_client_access texthash:$dir/access\"]
smtpd_helo_restrictions = [\"permit_mynetworks\", \"reject_invalid_helo_hostname\", \"reject_non_fqdn_helo_hostname\", \"check_helo_access texthash:$dir/access\"]
smtpd_sender_restrictions = [\"reject_non_fqdn_sender\", \"check_sender_access texthash:$dir/access\"]
smtpd_recipient_restrictions = [\"reject_non_fqdn_recipient\", \"reject_unlisted_recipient\", \"check_recipient_access texthash:$dir/access\"]
smtpd_data_restrictions = [\"reject_unauth_pipelining\", \"reject_multi_recipient_bounce\"]
header_checks = [\"regexp:$dir/header_checks\"]"
	read -r plain_port plain_pid < <(bench_policy_mx plain "")
	read -r policy_port policy_pid < <(bench_policy_mx policy "$restrictions")
	[ -n "${plain_port:-}" ] && [ -n "${policy_port:-}" ] || die "could not start the mxfront instances for the policy runs"
	PIDS+=("$plain_pid" "$policy_pid")

	# The machine is shared and noisy: the two alternate and the medians
	# are compared. A first short run of each warms up.
	bench_policy_load 500 "$plain_port" "$plain_pid" >/dev/null
	bench_policy_load 500 "$policy_port" "$policy_pid" >/dev/null
	local rounds=${POLICY_ROUNDS:-3} i pa=() pd=() pc=() qa=() qd=() qc=() acc del cpu
	for i in $(seq 1 "$rounds"); do
		read -r acc del cpu < <(bench_policy_load "$n" "$plain_port" "$plain_pid")
		pa+=("$acc") pd+=("$del") pc+=("$cpu")
		read -r acc del cpu < <(bench_policy_load "$n" "$policy_port" "$policy_pid")
		qa+=("$acc") qd+=("$del") qc+=("$cpu")
	done
	local mpa mpd mqa mqd
	mpa=$(median "${pa[@]}")
	mpd=$(median "${pd[@]}")
	mqa=$(median "${qa[@]}")
	mqd=$(median "${qd[@]}")
	local mpc mqc
	mpc=$(median "${pc[@]}")
	mqc=$(median "${qc[@]}")
	printf 'policy   %6d bytes x %6d: plain %s/%s msgs/s accepted/delivered (runs %s / %s), 16 restrictions + 100k access map + 1000 header_checks %s/%s msgs/s (runs %s / %s): accepted %s, delivered %s of plain (target >= 0.90)\n' \
		1024 "$n" "$mpa" "$mpd" "${pa[*]}" "${pd[*]}" "$mqa" "$mqd" "${qa[*]}" "${qd[*]}" \
		"$(awk -v x="$mqa" -v b="$mpa" 'BEGIN { printf "%.2f", x / b }')" \
		"$(awk -v x="$mqd" -v b="$mpd" 'BEGIN { printf "%.2f", x / b }')"
	printf 'policy   mxfront CPU per message: plain %s us, policy %s us (%+d us: the cost of the restrictions and checks)\n' \
		"$mpc" "$mqc" "$((mqc - mpc))"
}

# bench_policy_mx NAME EXTRA: starts an mxfront relaying example.test to
# the sink with the EXTRA configuration lines; prints "port pid".
bench_policy_mx() {
	local dir="$WORK/policy/mx-$1"
	mkdir -p "$dir"
	printf 'rcpt@example.test OK\n' >"$dir/relay_recipients"
	launch_mxfront "$dir" "\"texthash:$dir/relay_recipients\"" "$2"
}

# bench_policy_cpu PID: the process's CPU time (user + system), in clock
# ticks.
bench_policy_cpu() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# bench_policy_load N PORT PID: N messages; prints "accepted/s
# delivered/s CPU-microseconds-per-message" (the CPU of the mxfront
# process PID, from /proc: a steadier figure than throughput on a shared
# machine).
bench_policy_load() {
	local n=$1 port=$2 pid=$3 before t0 t1 t2 c0 c1
	before=$(sink_count)
	c0=$(bench_policy_cpu "$pid")
	t0=$(now)
	timeout "$PHASE_TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$n" -l 1024 -M client.bench.test \
		-f bench@remote.test -t rcpt@example.test "127.0.0.1:$port" ||
		die "smtp-source -m $n at port $port failed (exit $?)"
	t1=$(now)
	wait_sink $((before + n))
	t2=$(now)
	sleep 0.5 # the last deliveries' bookkeeping
	c1=$(bench_policy_cpu "$pid")
	echo "$(rate "$n" "$t0" "$t1") $(rate "$n" "$t0" "$t2") $(awk -v c="$((c1 - c0))" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", c / hz * 1e6 / n }')"
}

bench_policy
