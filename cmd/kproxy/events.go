package main

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/events"
	"github.com/kproxy/kproxy/internal/portreserve"
)

// The actions of kproxy's Events: what it was doing when the problem came up.
const (
	eventActionSync        = "SyncProxyRules"
	eventActionReservePort = "ReserveNodePort"
	// reasonNodePortNotReserved is the reason of the Node's Warning for a NodePort
	// another process holds: the Service works (its rules DNAT before any socket
	// sees the packet), but that process will not get its traffic.
	reasonNodePortNotReserved = "FailedToReserveNodePort"
)

// nodePortConflictEvent records a Warning on the Node for a NodePort that cannot be
// reserved; related is the first Service that wants it, so conflicts of different
// Services stay separate Events (the recorder merges Events of the same object,
// related object, reason and action into one series).
func nodePortConflictEvent(r *events.Recorder, nodeName string) func(portreserve.Port, []string, error) {
	return func(port portreserve.Port, services []string, err error) {
		note := fmt.Sprintf("NodePort %s of %s cannot be reserved: %v; the Service works, but the process holding the port gets none of its traffic",
			port, strings.Join(services, ", "), err)
		r.WarningRelated(events.NodeRef(nodeName), serviceRef(services), reasonNodePortNotReserved, eventActionReservePort, note)
	}
}

// serviceRef is the Service of the first "ns/name[:port]", or nil.
func serviceRef(servicePorts []string) *v1.ObjectReference {
	if len(servicePorts) == 0 {
		return nil
	}
	ns, rest, ok := strings.Cut(servicePorts[0], "/")
	if !ok {
		return nil
	}
	name, _, _ := strings.Cut(rest, ":")
	return &v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: ns, Name: name}
}
