// Package iptables is kproxy's iptables (and ip6tables) backend. It follows upstream
// kube-proxy's ruleset layout and chain names, so operators' tools read it as they
// would read kube-proxy's. The ruleset is computed by a pure builder (ruleset.go) and
// applied by a small exec layer (exec.go), so the builder is testable without root.
package iptables

import (
	"crypto/sha256"
	"encoding/base32"

	"github.com/kproxy/kproxy/internal/model"
)

// Fixed chain names, as upstream names them.
const (
	chainServices         = "KUBE-SERVICES"
	chainExternalServices = "KUBE-EXTERNAL-SERVICES"
	chainForward          = "KUBE-FORWARD"
	chainNodePorts        = "KUBE-NODEPORTS"
	chainProxyFirewall    = "KUBE-PROXY-FIREWALL"
	chainFirewall         = "KUBE-FIREWALL"
	chainPostrouting      = "KUBE-POSTROUTING"
	chainMarkMasq         = "KUBE-MARK-MASQ"
	chainCanary           = "KUBE-PROXY-CANARY"
)

// Prefixes of the per-service chains, all in the nat table.
const (
	prefixSVC = "KUBE-SVC-"
	prefixSVL = "KUBE-SVL-"
	prefixEXT = "KUBE-EXT-"
	prefixFW  = "KUBE-FW-"
	prefixSEP = "KUBE-SEP-"
)

var servicePrefixes = []string{prefixSVC, prefixSVL, prefixEXT, prefixFW, prefixSEP}

// hash16 is upstream's chain suffix: the first 16 characters of the base32 SHA-256.
func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// servicePortChains are the names of one ServicePort's chains; SVC, SVL, EXT and FW
// share one hash of "ns/name:port" + protocol, like upstream.
type servicePortChains struct {
	svc, svl, ext, fw string
}

func chainsFor(sp *model.ServicePort) servicePortChains {
	h := hash16(sp.Name.String() + sp.ProtocolLower())
	return servicePortChains{svc: prefixSVC + h, svl: prefixSVL + h, ext: prefixEXT + h, fw: prefixFW + h}
}

// endpointChain is the KUBE-SEP-* chain of one endpoint of one ServicePort.
func endpointChain(sp *model.ServicePort, ep *model.Endpoint) string {
	return prefixSEP + hash16(sp.Name.String()+sp.ProtocolLower()+ep.String())
}

// isServiceChain reports whether a nat chain is one of the per-service chains this
// backend creates and garbage-collects.
func isServiceChain(name string) bool {
	for _, p := range servicePrefixes {
		if len(name) > len(p) && name[:len(p)] == p {
			return true
		}
	}
	return false
}
