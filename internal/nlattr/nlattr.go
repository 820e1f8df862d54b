// Package nlattr splits netlink attributes safely. vishvananda/netlink's
// nl.ParseRouteAttr, which the conntrack and nfacct decoders used, slices past the
// buffer (a panic) when an attribute's length field is larger than what is left or
// smaller than its header, as fuzzing found; mdlayher/netlink's decoder checks every
// length and returns an error instead.
package nlattr

import (
	"syscall"

	"github.com/mdlayher/netlink"
)

// Parse splits b into its attributes, in the shape nl.ParseRouteAttr returns them:
// Attr.Type keeps the type (flags masked off), Value the payload without padding.
func Parse(b []byte) ([]syscall.NetlinkRouteAttr, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	var attrs []syscall.NetlinkRouteAttr
	for ad.Next() {
		v := ad.Bytes()
		attrs = append(attrs, syscall.NetlinkRouteAttr{
			Attr:  syscall.RtAttr{Len: uint16(syscall.SizeofRtAttr + len(v)), Type: ad.Type()},
			Value: v,
		})
	}
	if err := ad.Err(); err != nil {
		return nil, err
	}
	return attrs, nil
}
