package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Reply is one request's outcome as echoserver client prints it.
type Reply struct {
	Backend string  `json:"backend"` // name of the pod that answered, "" on error
	Seen    string  `json:"seen"`    // source IP:port that pod saw
	Error   string  `json:"error"`   // "", "refused", "timeout", "unreachable" or "other: ..."
	Ms      float64 `json:"ms"`
}

// SeenIP is the address part of Seen.
func (r Reply) SeenIP() string {
	host, _, err := net.SplitHostPort(r.Seen)
	if err != nil {
		return r.Seen
	}
	return host
}

// RequestOpt changes one echoserver client flag.
type RequestOpt func(*requestOpts)

type requestOpts struct {
	timeout    time.Duration
	interval   time.Duration
	sourcePort int
	sourceIP   string
}

// Timeout is the per-request timeout (default 2 s).
func Timeout(d time.Duration) RequestOpt { return func(o *requestOpts) { o.timeout = d } }

// Interval pauses between requests.
func Interval(d time.Duration) RequestOpt { return func(o *requestOpts) { o.interval = d } }

// SourcePort fixes the client port; for UDP all datagrams then share one socket,
// which is one conntrack entry.
func SourcePort(p int) RequestOpt { return func(o *requestOpts) { o.sourcePort = p } }

// SourceIP sends from a given local address.
func SourceIP(ip string) RequestOpt { return func(o *requestOpts) { o.sourceIP = ip } }

// Request runs echoserver client in namespace fromNS and returns one Reply per
// request. If the client itself cannot run, every Reply carries that error.
func (c *Cluster) Request(fromNS, proto, target string, count int, opts ...RequestOpt) []Reply {
	o := requestOpts{timeout: 2 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	args := []string{c.opts.EchoBin, "client", "--proto", proto, "--target", target,
		"--count", strconv.Itoa(count), "--timeout", o.timeout.String()}
	if o.interval > 0 {
		args = append(args, "--interval", o.interval.String())
	}
	if o.sourcePort != 0 {
		args = append(args, "--source-port", strconv.Itoa(o.sourcePort))
	}
	if o.sourceIP != "" {
		args = append(args, "--source-ip", o.sourceIP)
	}
	out, err := c.Exec(fromNS, args...)
	replies, perr := parseReplies(out)
	if err == nil && perr == nil && len(replies) == count {
		return replies
	}
	msg := fmt.Sprintf("other: client in %s to %s/%s failed: %v %v: %s", fromNS, proto, target, err, perr, out)
	replies = make([]Reply, count)
	for i := range replies {
		replies[i].Error = msg
	}
	return replies
}

func parseReplies(out string) ([]Reply, error) {
	var replies []Reply
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r Reply
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("bad client output line %q: %w", line, err)
		}
		replies = append(replies, r)
	}
	return replies, nil
}

// Spread counts answers per backend; failed requests are not counted.
func Spread(replies []Reply) map[string]int {
	m := map[string]int{}
	for _, r := range replies {
		if r.Error == "" {
			m[r.Backend]++
		}
	}
	return m
}

// Errors counts failed requests per error text.
func Errors(replies []Reply) map[string]int {
	m := map[string]int{}
	for _, r := range replies {
		if r.Error != "" {
			m[r.Error]++
		}
	}
	return m
}

// SeenIPs lists, per backend, the distinct source addresses it saw, sorted.
func SeenIPs(replies []Reply) map[string][]string {
	sets := map[string]map[string]bool{}
	for _, r := range replies {
		if r.Error != "" {
			continue
		}
		if sets[r.Backend] == nil {
			sets[r.Backend] = map[string]bool{}
		}
		sets[r.Backend][r.SeenIP()] = true
	}
	out := map[string][]string{}
	for b, s := range sets {
		for ip := range s {
			out[b] = append(out[b], ip)
		}
		sort.Strings(out[b])
	}
	return out
}

// Summary is a one-line description of replies for test messages.
func Summary(replies []Reply) string {
	return fmt.Sprintf("answers %v, seen %v, errors %v", Spread(replies), SeenIPs(replies), Errors(replies))
}

// WaitFor polls cond every 50 ms until it returns nil or timeout passes; it then
// returns cond's last error.
func (c *Cluster) WaitFor(cond func() error, timeout time.Duration) error {
	return WaitFor(cond, timeout)
}

// WaitFor is Cluster.WaitFor without a cluster.
func WaitFor(cond func() error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
