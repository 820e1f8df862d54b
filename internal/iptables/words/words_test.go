package words

import (
	"errors"
	"fmt"
	"testing"
)

func TestSplit(t *testing.T) {
	for line, want := range map[string]string{
		`-A KUBE-SVC-X -m comment --comment "ns/web:http -> 10.0.0.1:80" -j KUBE-SEP-Y`: `[-A KUBE-SVC-X -m comment --comment ns/web:http -> 10.0.0.1:80 -j KUBE-SEP-Y]`,
		`-m comment --comment "a \"quoted\" name"`:                                      `[-m comment --comment a "quoted" name]`,
		`-m comment --comment ""  -j  ACCEPT`:                                           `[-m comment --comment  -j ACCEPT]`,
		"-s 10.0.0.0/8\t-j DROP":                                                        `[-s 10.0.0.0/8 -j DROP]`,
		`-m comment --comment x\y`:                                                      `[-m comment --comment x\y]`,
	} {
		got, err := Split(line)
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("Split(%q) = %q, %v; want %s", line, got, err, want)
		}
	}
	if _, err := Split(`-m comment --comment "open`); !errors.Is(err, ErrUnterminatedQuote) {
		t.Errorf("an open quote: err %v, want ErrUnterminatedQuote", err)
	}
}
