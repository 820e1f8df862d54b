package nftables

import (
	"context"
	"encoding/binary"

	"github.com/mdlayher/netlink"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// NewSinkKernel returns a Kernel that keeps nothing but does the work a sync makes the
// process do in production, for bench/memory to measure without root: a transaction
// is rendered into nft's input text (what knftables writes to nft's stdin), and element
// writes are encoded into the netlink batch that writeElementsNetlink sends, which a
// test socket marshals, acknowledges and drops. The table always looks empty, so every
// sync is a first one. TxBytes, if not nil, is told the size of each rendered
// transaction and NetlinkBytes that of each netlink batch.
func NewSinkKernel(f model.Family, txBytes, netlinkBytes func(int)) Kernel {
	return sinkKernel{Interface: knftables.NewFake(nftFamily(f), TableName), family: f,
		txBytes: txBytes, netlinkBytes: netlinkBytes}
}

type sinkKernel struct {
	knftables.Interface
	family                model.Family
	txBytes, netlinkBytes func(int)
}

func (k sinkKernel) Run(_ context.Context, tx *knftables.Transaction) error {
	n := len(tx.String())
	if k.txBytes != nil {
		k.txBytes(n)
	}
	return nil
}

func (sinkKernel) CountRules(context.Context, string) (int, error) { return 0, nil }

func (sinkKernel) RuleCounts(context.Context) (map[string]int, error) { return nil, nil }

func (k sinkKernel) writeElements(_ context.Context, ops []elementOp) error {
	dial := func(req []netlink.Message) ([]netlink.Message, error) {
		// The real socket marshals the whole batch into one buffer for sendmsg.
		size := 0
		var acks []netlink.Message
		for _, m := range req {
			b, err := m.MarshalBinary()
			if err != nil {
				return nil, err
			}
			size += len(b)
			if m.Header.Flags&netlink.Acknowledge != 0 {
				hdr := make([]byte, 4+16)
				binary.NativeEndian.PutUint32(hdr[4:], uint32(len(b)))
				acks = append(acks, netlink.Message{Header: netlink.Header{Type: netlink.Error,
					Sequence: m.Header.Sequence, PID: m.Header.PID}, Data: hdr})
			}
		}
		if k.netlinkBytes != nil {
			k.netlinkBytes(size)
		}
		return acks, nil
	}
	return writeElementsNetlinkWith(k.family, ops, dial)
}
