package allocator

import (
	"errors"
	"fmt"
)

// HeldError reports that an IP or port another owner holds was asked for.
type HeldError struct {
	// Key is the request entry that failed: an IP family ("IPv4") or a port key.
	Key string
	// Value is what was asked for: "10.96.0.10" or "nodePort 30080".
	Value  string
	Holder string
}

func (e *HeldError) Error() string { return fmt.Sprintf("%s is held by %s", e.Value, e.Holder) }

// RangeError reports an IP or port outside the configured ranges, or an address the
// allocator never hands out (the network or broadcast address of a range).
type RangeError struct {
	Key    string
	Value  string
	Range  string // "the service-cluster-ip-range 10.96.0.0/12"
	Reason string // "outside" or a longer explanation
}

func (e *RangeError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("%s is outside %s", e.Value, e.Range)
	}
	return fmt.Sprintf("%s %s %s", e.Value, e.Reason, e.Range)
}

// ExhaustedError reports that a range has no free IP or port left.
type ExhaustedError struct {
	Key   string
	What  string // "IPv4 address", "nodePort"
	Range string
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("no free %s left in %s", e.What, e.Range)
}

// ErrorKey returns the request key an allocation error is about (an IP family such as
// "IPv4", or a PortRequest.Key), "" for other errors.
func ErrorKey(err error) string {
	if e, ok := errors.AsType[*HeldError](err); ok {
		return e.Key
	}
	if e, ok := errors.AsType[*RangeError](err); ok {
		return e.Key
	}
	if e, ok := errors.AsType[*ExhaustedError](err); ok {
		return e.Key
	}
	return ""
}

// SaveError reports that the allocations could not be written to the state directory.
// Every change of the transaction was undone: the owners in Changed are back to what
// they held before; every other owner's holding was not touched by it.
type SaveError struct {
	Dir     string
	Changed []string // sorted
	Err     error
}

func (e *SaveError) Error() string {
	return fmt.Sprintf("the allocations cannot be saved in the state directory %s, so no new ClusterIP or NodePort is handed out until it can: %v", e.Dir, e.Err)
}

func (e *SaveError) Unwrap() error { return e.Err }
