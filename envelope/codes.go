package envelope

// Replies used in several packages, named by code and meaning. Texts follow
// Postfix's wording so that operators and their scripts recognise them.
var (
	// RFC 5321 §4.2.2 451: local error in processing; RFC 3463 4.3.0 other
	// mail system status. The default for every unexpected failure.
	ReplyLocalError = NewReply(451, Enhanced{4, 3, 0}, "Error: queue file write error")
	// ReplyInternal answers every error that carries no reply of its own:
	// temporary, and without internal details.
	ReplyInternal = NewReply(451, Enhanced{4, 3, 0}, "Error: internal error, please try again later")
	// ReplyTempLookup is Postfix's reply when a table lookup fails.
	ReplyTempLookup = NewReply(451, Enhanced{4, 3, 0}, "Temporary lookup failure")
	// RFC 3463 5.3.4 message too big for system.
	ReplyTooBig = NewReply(552, Enhanced{5, 3, 4}, "Error: message file too big")
	// RFC 3463 4.5.3 too many recipients.
	ReplyTooManyRcpts = NewReply(452, Enhanced{4, 5, 3}, "Error: too many recipients")
	// RFC 3463 4.3.1 mail system full.
	ReplyNoSpace = NewReply(452, Enhanced{4, 3, 1}, "Insufficient system storage")
	// RFC 3463 4.3.2 system not accepting network messages (shutdown).
	ReplyShutdown = NewReply(421, Enhanced{4, 3, 2}, "Service shutting down, closing transmission channel")
)
