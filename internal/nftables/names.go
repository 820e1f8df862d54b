// Package nftables is kproxy's nftables backend. It programs the same Service semantics
// as the iptables backend into one nftables table per IP family, laid out as upstream
// kube-proxy's nftables mode lays it out (table "kube-proxy", the same chain, set and map
// names), so operators' tools and cleanup of upstream leftovers work unchanged.
//
// A packet costs a constant number of lookups: destination address, protocol and port
// select the Service's chain through one verdict map, whatever the number of Services.
// The transaction of each sync is computed by a pure builder (build.go) from the
// snapshot and from what the previous sync left in the kernel, so a change to one
// Service touches only that Service's chains and map elements, and an endpoint change
// touches map elements only (see endpointDispatch), which are then written over netlink
// without nft (elements.go).
package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// TableName is the table of each family; upstream's name, on purpose (see package doc).
const TableName = "kube-proxy"

const tableComment = "rules for kproxy"

// Base chains, hooked into netfilter.
const (
	chainFilterPreroutingPreDNAT = "filter-prerouting-pre-dnat"
	chainFilterOutputPreDNAT     = "filter-output-pre-dnat"
	chainFilterInput             = "filter-input"
	chainFilterForward           = "filter-forward"
	chainFilterOutput            = "filter-output"
	chainNATPrerouting           = "nat-prerouting"
	chainNATOutput               = "nat-output"
	chainNATPostrouting          = "nat-postrouting"
)

// Regular chains every sync keeps, reached from the base chains.
const (
	chainServices               = "services"
	chainMasquerading           = "masquerading"
	chainClusterIPsCheck        = "cluster-ips-check"
	chainFirewallCheck          = "firewall-check"
	chainServiceEndpointsCheck  = "service-endpoints-check"
	chainNodePortEndpointsCheck = "nodeport-endpoints-check"
	chainReject                 = "reject-chain"
)

// Sets and maps.
const (
	setClusterIPs          = "cluster-ips"
	setNodePortIPs         = "nodeport-ips"
	setHairpinConnections  = "hairpin-connections"
	mapServiceIPs          = "service-ips"
	mapServiceNodePorts    = "service-nodeports"
	mapNoEndpointServices  = "no-endpoint-services"
	mapNoEndpointNodePorts = "no-endpoint-nodeports"
	mapFirewallIPs         = "firewall-ips"
)

// Prefixes of the per-ServicePort objects.
const (
	prefixService  = "service-"
	prefixLocal    = "local-"
	prefixExternal = "external-"
	prefixFirewall = "firewall-"
	prefixEndpoint = "endpoint-"
	prefixAffinity = "affinity-"
)

// nameBaseMax is the longest a per-ServicePort name base may be: the longest prefix
// ("external-", "firewall-", ...) plus the base must fit knftables.NameLengthMax.
const nameBaseMax = knftables.NameLengthMax - 16

// hashedBase prefixes name with the first 8 characters of the base32 SHA-256 of itself
// (so that truncated names stay unique) and truncates the result to nameBaseMax.
func hashedBase(name string) string {
	sum := sha256.Sum256([]byte(name))
	base := base32.StdEncoding.EncodeToString(sum[:])[:8] + "-" + name
	if len(base) > nameBaseMax {
		base = base[:nameBaseMax-3] + "..."
	}
	return base
}

// portBase is "HASH8-ns/name/proto/port", the shared base of one ServicePort's chains.
// Namespace, Service and port names and protocols only hold [a-z0-9-], all legal in
// nft names, and "/" cannot occur in them, so the parts stay unambiguous.
func portBase(sp *model.ServicePort) string {
	n := sp.Name
	return hashedBase(n.Namespace + "/" + n.Name + "/" + sp.ProtocolLower() + "/" + n.Port)
}

// endpointBase is "HASH8-ns/name/proto/port__IP/port", the base of one endpoint's chain
// and affinity set. ':' is not legal in nft names, so IPv6 colons become dots.
func endpointBase(sp *model.ServicePort, ep *model.Endpoint) string {
	n := sp.Name
	ip := strings.ReplaceAll(ep.IP.String(), ":", ".")
	return hashedBase(n.Namespace + "/" + n.Name + "/" + sp.ProtocolLower() + "/" + n.Port +
		"__" + ip + "/" + itoa(ep.Port))
}
