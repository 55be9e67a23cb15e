// Package table implements Postfix lookup tables ("type:name", see
// DATABASE_README) and Postfix match lists (postconf(5) "relay_domains",
// "mynetworks").
//
// A lookup has three outcomes: found (value, true, nil), not found
// ("", false, nil), or error ("", false, err). Callers must turn an error into
// a temporary failure (451 4.3.0), never into "not found".
//
// # Table types
//
//   - texthash:/path – postmap(1) source format: "key whitespace value";
//     comment and blank lines ignored; a line starting with whitespace
//     continues the previous logical line; keys may be double-quoted to
//     contain whitespace (Postfix 3.2 and later; the quotes stay part of the
//     key, as in Postfix). Keys are folded to lower case at load and lookup.
//   - hash:, btree:, lmdb:, cdb:, dbm:, sdbm: – Postfix reads the postmap(1)
//     output /path.db (or .lmdb, .cdb); mxfront reads the SOURCE text file
//     /path with texthash semantics, so no postmap step is needed and the
//     table is re-read on Set.Reload.
//   - regexp:/path (regexp_table(5)) and pcre:/path (pcre_table(5)), also the
//     Postfix 3.7 inline forms regexp:{ {rule}, ... } and pcre:{...}.
//   - cidr:/path (cidr_table(5)), also cidr:{ {rule}, ... }.
//   - inline:{ key=value, { key = text with spaces, commas } }.
//   - static:value, static:{ text with spaces }.
//   - fail:name – every lookup fails (a temporary error).
//   - proxy:type:name – opened as type:name (there is no proxymap process).
//
// Other types (ldap:, tcp:, socketmap:) are added by other packages through
// Options.Openers.
//
// Pattern tables (regexp, pcre, cidr) are queried with the full lookup key
// only: Postfix does no parent-domain, user@ or @domain lookups on them
// (regexp_table(5) "TABLE SEARCH ORDER"). See IsPattern and LookupPartial.
//
// # Stricter than Postfix
//
// Postfix logs a warning and skips a malformed table line (a key without a
// value, an unparsable regexp, a CIDR network with host bits set, an "if"
// without "endif", ...). A silently skipped line changes who receives mail,
// so mxfront refuses to load such a file instead, with an error that names
// FILE:LINE; on Set.Reload the previous contents stay in use. Duplicate
// keys in a texthash file are a warning, and the first entry wins, as with
// postmap(1) without -r; in an inline: table they are an error (Postfix
// keeps the last), as is an empty inline value.
//
// # Regular expressions
//
// Both regexp: and pcre: use Go's RE2 engine (package regexp). Syntax RE2
// cannot do (backreferences, lookaround, possessive quantifiers, basic POSIX
// syntax via the regexp: "x" flag) is rejected at load time with FILE:LINE.
// regexp: tables use leftmost-longest matching, as POSIX does. Known
// differences that are not detected: in POSIX brackets a backslash is a
// literal character ("[\.]" matches backslash or dot in Postfix regexp:, only
// dot here), and the pcre: flag E is a no-op because RE2's "$" (without m)
// always matches only at the end of the text.
//
// # Match lists
//
// DomainList and NetList implement Postfix match lists: "domain",
// ".domain", "/file/name", "type:table" and "!pattern" items, first match
// decides. One deliberate difference: ".example.com" always matches
// subdomains of example.com; Postfix 3.x with the list named in
// parent_domain_matches_subdomains matches nothing with that form.
package table
