package nlattr

import (
	"testing"

	"github.com/vishvananda/netlink/nl"
)

func TestParse(t *testing.T) {
	// Two attributes, the first padded (3 bytes of payload), the second nested-flagged.
	good := append(nl.NewRtAttr(1, []byte{1, 2, 3}).Serialize(), nl.NewRtAttr(0x8000|2, []byte{9, 9, 9, 9}).Serialize()...)
	attrs, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(attrs) != 2 || attrs[0].Attr.Type != 1 || string(attrs[0].Value) != "\x01\x02\x03" ||
		attrs[1].Attr.Type != 2 || string(attrs[1].Value) != "\x09\x09\x09\x09" {
		t.Errorf("Parse = %+v", attrs)
	}
	for name, b := range map[string][]byte{
		"length beyond the buffer": {16, 0, 1, 0, 1, 2},
		"length below the header":  {2, 0, 1, 0},
		"a header cut short":       {8, 0},
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzParse: no input panics, and every value returned lies within the input.
func FuzzParse(f *testing.F) {
	f.Add(nl.NewRtAttr(1, []byte{1, 2, 3}).Serialize())
	f.Add([]byte{16, 0, 1, 0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs, err := Parse(b)
		if err != nil {
			return
		}
		total := 0
		for _, a := range attrs {
			total += len(a.Value)
		}
		if total > len(b) {
			t.Fatalf("%d bytes of values from %d bytes of input", total, len(b))
		}
	})
}
