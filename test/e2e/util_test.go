package e2e

import (
	"bufio"
	"bytes"
	"fmt"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
