package config

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports: Base up to Base+Size-1.
// 30000-32767 is {Base: 30000, Size: 2768}.
type PortRange struct{ Base, Size int }

// Contains reports whether port p lies in the range.
func (r PortRange) Contains(p int) bool {
	return p >= r.Base && p < r.Base+r.Size
}

// String gives the range as "A-B", the form ParsePortRange reads;
// the zero range gives "".
func (r PortRange) String() string {
	if r.Size == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", r.Base, r.Base+r.Size-1)
}

// ParsePortRange parses "A-B" with 1 <= A <= B <= 65535.
func ParsePortRange(s string) (PortRange, error) {
	s = strings.TrimSpace(s)
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return PortRange{}, fmt.Errorf("want the form A-B (e.g. 30000-32767)")
	}
	base, err := parsePort(lo)
	if err != nil {
		return PortRange{}, fmt.Errorf("start: %w", err)
	}
	end, err := parsePort(hi)
	if err != nil {
		return PortRange{}, fmt.Errorf("end: %w", err)
	}
	if end < base {
		return PortRange{}, fmt.Errorf("end %d is below start %d", end, base)
	}
	return PortRange{Base: base, Size: end - base + 1}, nil
}

// parsePort parses a port number in 1..65535.
func parsePort(s string) (int, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is outside 1-65535", n)
	}
	return n, nil
}
