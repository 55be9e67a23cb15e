#!/usr/bin/env bash
# install-deps.sh: install the programs the tests need, only if missing.
#
#   postfix          smtp-sink and smtp-source (test units, load generator)
#   swaks            SMTP/LMTP test client
#   slapd ldap-utils OpenLDAP server and ldapsearch/ldapadd/ldapmodify
#   dovecot-core     Dovecot, the LMTP unit
#   dovecot-lmtpd
#   staticcheck      honnef.co/go/tools/cmd/staticcheck@v0.8.2 (go install)
#
# Idempotent: on a machine that has everything it only checks (dpkg-query,
# command -v) and does no network work. apt-get update runs only when a
# package is missing. Installing the daemons may start system services
# (depending on policy-rc.d); the tests never use or collide with them.
set -euo pipefail

APT_PACKAGES=(postfix swaks slapd ldap-utils dovecot-core dovecot-lmtpd)
STATICCHECK_VERSION=v0.8.2

log() { printf 'install-deps: %s\n' "$*" >&2; }

installed() { # installed PKG: is the Debian package installed?
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
	for p in "${APT_PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
else
	# Not Debian: judge by the programs alone and say what is absent.
	for prog in smtp-sink smtp-source swaks slapd ldapsearch dovecot; do
		command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || missing+=("$prog")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		log "not a Debian system and missing: ${missing[*]}; install them by hand"
		exit 1
	fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
	SUDO=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then
			SUDO=(sudo)
		else
			log "missing packages ${missing[*]} and not root (no sudo): run as root"
			exit 1
		fi
	fi
	log "installing: ${missing[*]}"
	# Never prompt: slapd without an initial config (the tests write their
	# own), postfix without a mail configuration.
	"${SUDO[@]}" debconf-set-selections <<-'EOF'
		slapd slapd/no_configuration boolean true
		postfix postfix/main_mailer_type select No configuration
	EOF
	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null
	for p in "${missing[@]}"; do
		installed "$p" || { log "package $p is still not installed"; exit 1; }
	done
fi

# staticcheck: `go install` puts it in $(go env GOPATH)/bin, which may not
# be in PATH; the Makefile looks there too.
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
gobin=$("$GO" env GOBIN)
[ -n "$gobin" ] || gobin="$("$GO" env GOPATH)/bin"
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$gobin/staticcheck" ]; then
	log "installing staticcheck $STATICCHECK_VERSION into $gobin"
	"$GO" install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

log "all test dependencies present"
