package iptables

import (
	"bufio"
	"bytes"
	"io"
)

// Input is an iptables-restore input held as the pieces it was built from, in order.
// A full sync's input is tens of megabytes at ten thousand Services (45 MiB at 10
// endpoints each): joined into one buffer it would exist twice while it is built, and
// once more for as long as the restore runs, and the garbage collector lets the heap
// grow to twice the most it saw live. Streamed from its pieces to the process it is
// never copied.
type Input [][]byte

// Len is the input's size in bytes.
func (in Input) Len() int {
	n := 0
	for _, p := range in {
		n += len(p)
	}
	return n
}

// Reader reads the input from its pieces.
func (in Input) Reader() io.Reader {
	rs := make([]io.Reader, len(in))
	for i, p := range in {
		rs[i] = bytes.NewReader(p)
	}
	return io.MultiReader(rs...)
}

// Bytes joins the input into one buffer: for small inputs, tests and error messages.
func (in Input) Bytes() []byte { return bytes.Join(in, nil) }

// inputRestorer is a Runner that can feed iptables-restore from an Input without
// joining it (the real one does; fakes take the joined bytes).
type inputRestorer interface {
	RestoreInput(in Input) error
}

// restoreInput feeds in to r's iptables-restore, streamed where r can.
func restoreInput(r Runner, in Input) error {
	if s, ok := r.(inputRestorer); ok {
		return s.RestoreInput(in)
	}
	return r.Restore(in.Bytes())
}

// lines calls fn with each line of the input (without its newline); a line may span
// pieces.
func (in Input) lines(fn func(line []byte)) {
	sc := bufio.NewScanner(in.Reader())
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Bytes())
	}
}
