# bench-ldap.sh: recipients verified via LDAP against the same recipients
# in a table file, in one run. Sourced by scripts/bench.sh (LDAP=0 skips
# it), whose helpers and sink it uses.
#
# N_LDAP distinct recipients (smtp-source -N: 1rcpt@example.test ...), one
# 1 KiB message each, SESSIONS parallel sessions, through mxfront into the
# sink, with relay_recipient_maps =
#   ldap cold: ldap: against a real slapd holding the N users, cache empty
#              (one search per recipient)
#   file:      texthash: with all N recipients
#   ldap warm: ldap: again, every answer in the cache
# with file and warm alternating LDAP_ROUNDS times (default 3), and prints
# messages/s delivered (medians) and the LDAP/file ratios (target: warm
# within 15% of file, ratio >= 0.85).
#
# Environment: N_LDAP (default 5000), LDAP_ROUNDS (3). Needs slapd, slapadd and ldapsearch
# (Debian packages slapd, ldap-utils); skipped with a note without them.

bench_ldap() {
	local n=${N_LDAP:-5000}
	local slapd slapadd ldapsearch
	slapd=$(command -v slapd || echo /usr/sbin/slapd)
	slapadd=$(command -v slapadd || echo /usr/sbin/slapadd)
	ldapsearch=$(command -v ldapsearch || true)
	if [ ! -x "$slapd" ] || [ ! -x "$slapadd" ] || [ -z "$ldapsearch" ]; then
		echo "ldap: skipped (slapd/ldap-utils not installed; run scripts/install-deps.sh)"
		return 0
	fi
	local dir="$WORK/ldap"
	mkdir -p "$dir/data"

	# The directory: n users u1..un with mail Nrcpt@example.test.
	cat >"$dir/slapd.conf" <<-EOF
		include /etc/ldap/schema/core.schema
		include /etc/ldap/schema/cosine.schema
		include /etc/ldap/schema/inetorgperson.schema
		modulepath /usr/lib/ldap
		moduleload back_mdb
		pidfile $dir/slapd.pid
		argsfile $dir/slapd.args
		loglevel none
		database mdb
		maxsize 1073741824
		suffix "dc=example,dc=test"
		rootdn "cn=admin,dc=example,dc=test"
		rootpw secret
		directory $dir/data
		index objectClass eq
		index mail eq
		access to * by * read
	EOF
	{
		printf 'dn: dc=example,dc=test\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n\n'
		printf 'dn: ou=people,dc=example,dc=test\nobjectClass: organizationalUnit\nou: people\n\n'
		awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "dn: uid=u%d,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: u%d\ncn: U\nsn: %d\nmail: %drcpt@example.test\n\n", i, i, i, i }'
	} >"$dir/seed.ldif"
	"$slapadd" -q -f "$dir/slapd.conf" -l "$dir/seed.ldif" >"$dir/slapadd.log" 2>&1 || die "slapadd failed: $(tail -c 300 "$dir/slapadd.log")"

	local try port pid ldap_url=""
	for try in $(seq 1 20); do
		port=$((20000 + RANDOM % 40000))
		greets 127.0.0.1 "$port" "" && continue
		"$slapd" -d 0 -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" >"$dir/slapd.log" 2>&1 &
		pid=$!
		for _ in $(seq 1 100); do # up to 10 s
			kill -0 "$pid" 2>/dev/null || break
			if "$ldapsearch" -x -LLL -o nettimeout=2 -H "ldap://127.0.0.1:$port" -s base -b dc=example,dc=test dn >/dev/null 2>&1; then
				PIDS+=("$pid")
				ldap_url="ldap://127.0.0.1:$port"
				break 2
			fi
			sleep 0.1
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	[ -n "$ldap_url" ] || die "could not start slapd: $(tail -c 300 "$dir/slapd.log")"

	awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "%drcpt@example.test OK\n", i }' >"$dir/relay_recipients"
	cat >"$dir/ldap-recipients.cf" <<-EOF
		server_host = $ldap_url
		search_base = ou=people,dc=example,dc=test
		query_filter = (mail=%s)
		result_attribute = mail
		domain = example.test
		size_limit = 1
		bind = no
		cache_ttl = 1h
		negative_cache_ttl = 10s
		pool_size = 4
	EOF

	local file_port file_pid ldap_port ldap_pid
	read -r file_port file_pid < <(bench_ldap_mx file "\"texthash:$dir/relay_recipients\"")
	read -r ldap_port ldap_pid < <(bench_ldap_mx ldap "\"ldap:$dir/ldap-recipients.cf\"")
	[ -n "${file_port:-}" ] && [ -n "${ldap_port:-}" ] || die "could not start the mxfront instances for the LDAP runs"
	PIDS+=("$file_pid" "$ldap_pid")

	# The machine is shared and noisy: file and warm runs alternate
	# LDAP_ROUNDS times and the medians are compared.
	local rounds=${LDAP_ROUNDS:-3} cold files=() warms=() i
	cold=$(bench_ldap_load "$n" "$ldap_port")
	for i in $(seq 1 "$rounds"); do
		files+=("$(bench_ldap_load "$n" "$file_port")")
		warms+=("$(bench_ldap_load "$n" "$ldap_port")")
	done
	local file warm
	file=$(median "${files[@]}")
	warm=$(median "${warms[@]}")
	printf 'ldap     %6d bytes x %6d: file %s msgs/s (runs %s), ldap cold %s msgs/s = %s of file, ldap warm %s msgs/s (runs %s) = %s of file (target >= 0.85)\n' \
		1024 "$n" "$file" "${files[*]}" "$cold" "$(awk -v x="$cold" -v b="$file" 'BEGIN { printf "%.2f", x / b }')" \
		"$warm" "${warms[*]}" "$(awk -v x="$warm" -v b="$file" 'BEGIN { printf "%.2f", x / b }')"
}

# bench_ldap_mx NAME MAPS: starts an mxfront relaying example.test to the
# sink with relay_recipient_maps = [MAPS]; prints "port pid".
bench_ldap_mx() {
	launch_mxfront "$WORK/ldap/mx-$1" "$2" ""
}

# bench_ldap_load N PORT: N messages to N distinct recipients (-N), prints
# messages/s until the sink has them all.
bench_ldap_load() {
	local n=$1 port=$2 before t0 t2
	before=$(sink_count)
	t0=$(now)
	timeout "$PHASE_TIMEOUT" "$SMTP_SOURCE" -N -s "$SESSIONS" -m "$n" -l 1024 \
		-f bench@remote.test -t rcpt@example.test "127.0.0.1:$port" ||
		die "smtp-source -N -m $n at port $port failed (exit $?)"
	wait_sink $((before + n))
	t2=$(now)
	rate "$n" "$t0" "$t2"
}

bench_ldap
