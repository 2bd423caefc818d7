package stun

// DropReason says why a datagram was not answered; its String is the
// metric label.
type DropReason uint8

const (
	// DropNone: the datagram is answered.
	DropNone DropReason = iota
	// DropShort: shorter than a STUN header (20 bytes).
	DropShort
	// DropTooLarge: longer than MaxRequestSize.
	DropTooLarge
	// DropNotSTUN: the first two bits are not zero, so not STUN.
	DropNotSTUN
	// DropLength: the length field is not a multiple of four or does not
	// match the datagram.
	DropLength
	// DropNotBindingRequest: a STUN message, but no Binding request (an
	// indication, a response, another method such as TURN's Allocate).
	DropNotBindingRequest
	// DropAttributes: the attributes do not parse.
	DropAttributes
	// DropFingerprint: a FINGERPRINT whose CRC does not match.
	DropFingerprint
	// DropRateLimited: the source prefix has used its budget
	// (Config.SourceRate, Config.SourceBurst).
	DropRateLimited
	// DropSourcesFull: the table of source prefixes is full with prefixes
	// that are all still using their budget.
	DropSourcesFull

	numDropReasons = iota
)

// DropReasons lists every reason a datagram is dropped, for metrics.
func DropReasons() []DropReason {
	all := make([]DropReason, 0, numDropReasons-1)
	for r := DropShort; r < numDropReasons; r++ {
		all = append(all, r)
	}
	return all
}

func (r DropReason) String() string {
	switch r {
	case DropNone:
		return "none"
	case DropShort:
		return "short"
	case DropTooLarge:
		return "too_large"
	case DropNotSTUN:
		return "not_stun"
	case DropLength:
		return "bad_length"
	case DropNotBindingRequest:
		return "not_binding_request"
	case DropAttributes:
		return "bad_attributes"
	case DropFingerprint:
		return "bad_fingerprint"
	case DropRateLimited:
		return "rate_limited"
	case DropSourcesFull:
		return "sources_full"
	}
	return "unknown"
}
