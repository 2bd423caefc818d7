package rendezvous

import "fmt"

// ErrorCode says why the super peer refused something. It travels in
// FrameError; docs/PROTOCOL.md lists them all.
type ErrorCode uint16

const (
	// ErrCodePeerNotFound: no device with that peer ID is registered here.
	// The session goes on.
	ErrCodePeerNotFound ErrorCode = 1
	// ErrCodeNotRegistered: a frame other than FrameRegister came first.
	ErrCodeNotRegistered ErrorCode = 2
	// ErrCodeBadSignature: the registration's signature does not verify for
	// this peer ID on this connection (a replay from another connection, or
	// a key the device does not hold).
	ErrCodeBadSignature ErrorCode = 3
	// ErrCodeMalformedFrame: a frame could not be decoded.
	ErrCodeMalformedFrame ErrorCode = 4
	// ErrCodeFrameTooLarge: a frame's length is over MaxPayload.
	ErrCodeFrameTooLarge ErrorCode = 5
	// ErrCodeAlreadyRegistered: a second FrameRegister on one session.
	ErrCodeAlreadyRegistered ErrorCode = 6
	// ErrCodeReplaced: a newer session registered the same peer ID.
	ErrCodeReplaced ErrorCode = 7
	// ErrCodeExpired: nothing arrived from the device within the session
	// timeout, or it did not register within it.
	ErrCodeExpired ErrorCode = 8
	// ErrCodeRefused: admission refused the peer ID.
	ErrCodeRefused ErrorCode = 9
	// ErrCodeSlowReader: the device did not read its frames: a write to
	// it did not complete within the write timeout.
	ErrCodeSlowReader ErrorCode = 10
	// ErrCodeShuttingDown: the super peer is stopping.
	ErrCodeShuttingDown ErrorCode = 11
	// ErrCodeRateLimited: too many FrameConnect or FrameAddrs, or the
	// peer cannot take an introduction now; retry later. The session
	// goes on.
	ErrCodeRateLimited ErrorCode = 12
	// ErrCodeBadRequest: a well-formed request that cannot be served, such
	// as connecting to oneself. The session goes on.
	ErrCodeBadRequest ErrorCode = 13
	// ErrCodeUpgradeRequired: the device's protocol version is below the
	// oldest the super peer serves; the message names both.
	ErrCodeUpgradeRequired ErrorCode = 14
	// ErrCodeTryLater: admission could not decide now (its callouts are
	// all busy, or the service it asks did not answer); retry later. The
	// message says why.
	ErrCodeTryLater ErrorCode = 15
	// ErrCodeEndedByOperator: the super peer's operator ended the session
	// (a kick, or a deny that matches the device); the message says which.
	ErrCodeEndedByOperator ErrorCode = 16

	// numErrorCodes is one more than the highest code, for tables indexed
	// by code.
	numErrorCodes = iota + 1
)

// Fatal reports whether the super peer ends the session after sending
// this error.
func (c ErrorCode) Fatal() bool {
	switch c {
	case ErrCodePeerNotFound, ErrCodeRateLimited, ErrCodeBadRequest:
		return false
	}
	return true
}

func (c ErrorCode) String() string {
	switch c {
	case ErrCodePeerNotFound:
		return "peer not found"
	case ErrCodeNotRegistered:
		return "not registered"
	case ErrCodeBadSignature:
		return "bad signature"
	case ErrCodeMalformedFrame:
		return "malformed frame"
	case ErrCodeFrameTooLarge:
		return "frame too large"
	case ErrCodeAlreadyRegistered:
		return "already registered"
	case ErrCodeReplaced:
		return "replaced"
	case ErrCodeExpired:
		return "expired"
	case ErrCodeRefused:
		return "refused"
	case ErrCodeSlowReader:
		return "slow reader"
	case ErrCodeShuttingDown:
		return "shutting down"
	case ErrCodeRateLimited:
		return "rate limited"
	case ErrCodeBadRequest:
		return "bad request"
	case ErrCodeUpgradeRequired:
		return "upgrade required"
	case ErrCodeTryLater:
		return "try later"
	case ErrCodeEndedByOperator:
		return "ended by operator"
	}
	return fmt.Sprintf("error %d", uint16(c))
}
