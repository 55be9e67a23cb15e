package policy

// TraceEvent is one step of a decision, for `mxfront explain`: a stage
// starting, a restriction tried and its result, a table lookup, or a note
// (alias expansion, routes, content checks).
type TraceEvent struct {
	// Kind is "stage" (a restriction list starts), "try" (a restriction
	// starts), "restriction" (its result), "lookup", "result" (an access
	// or content check action) or "note".
	Kind string `json:"kind"`
	// Stage is the SMTP command being decided: CONNECT, HELO, MAIL, RCPT,
	// VRFY, DATA, END-OF-MESSAGE.
	Stage string `json:"stage,omitempty"`
	// List is the restriction list (smtpd_client_restrictions, a
	// restriction class, or an access table result).
	List string `json:"list,omitempty"`
	// Depth is the nesting of restriction classes and access results.
	Depth int `json:"depth,omitempty"`
	// Restriction is the restriction with its argument.
	Restriction string `json:"restriction,omitempty"`
	// Table, Key, Found and Value describe a lookup.
	Table string `json:"table,omitempty"`
	Key   string `json:"key,omitempty"`
	Found bool   `json:"found,omitempty"`
	Value string `json:"value,omitempty"`
	// Result is DUNNO, OK, REJECT, DEFER, WARN (reject_warning), or an
	// access action (HOLD, DISCARD, ...).
	Result string `json:"result,omitempty"`
	// Reply is the SMTP reply of a REJECT or DEFER.
	Reply string `json:"reply,omitempty"`
	// Text is free text: a note, or a lookup error.
	Text string `json:"text,omitempty"`
}
