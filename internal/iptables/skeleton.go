package iptables

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
)

// builtinChains are the chains of the kernel's tables that kproxy puts jumps in.
var builtinChains = []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// inSkeleton says whether an iptables-save line belongs to a table's skeleton: its
// chain declarations and the rules of its built-in chains. That is all a full sync
// needs to know (chains to delete, jumps to insert), and at 10,000 Services it is a
// few kilobytes of a dump of tens of megabytes.
func inSkeleton(line []byte) bool {
	if len(line) > 0 && line[0] == ':' {
		return true
	}
	if !bytes.HasPrefix(line, []byte("-A ")) {
		return false
	}
	for _, c := range builtinChains {
		if rest := line[3:]; len(rest) > len(c) && rest[len(c)] == ' ' && string(rest[:len(c)]) == c {
			return true
		}
	}
	return false
}

// skeletonSaver streams iptables-save and keeps only the skeleton, so the dump is
// never held in memory whole.
type skeletonSaver interface {
	saveSkeleton(table string) ([]byte, error)
}

// saveSkeleton returns the skeleton of one table (see inSkeleton) as iptables-save
// lines.
func saveSkeleton(r Runner, table string) ([]byte, error) {
	if s, ok := r.(skeletonSaver); ok {
		return s.saveSkeleton(table)
	}
	save, err := r.Save(table)
	if err != nil {
		return nil, err
	}
	var out []byte
	for len(save) > 0 {
		line := save
		if i := bytes.IndexByte(save, '\n'); i >= 0 {
			line, save = save[:i], save[i+1:]
		} else {
			save = nil
		}
		if inSkeleton(line) {
			out = append(append(out, line...), '\n')
		}
	}
	return out, nil
}

func (r *execRunner) saveSkeleton(table string) ([]byte, error) {
	cmd := exec.Command(r.save, "-t", table)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s -t %s: %w", r.save, table, err)
	}
	var out []byte
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if inSkeleton(sc.Bytes()) {
			out = append(append(out, sc.Bytes()...), '\n')
		}
	}
	scanErr := sc.Err()
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("%s -t %s: %w: %s", r.save, table, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if scanErr != nil {
		return nil, fmt.Errorf("%s -t %s: reading its output: %w", r.save, table, scanErr)
	}
	return out, nil
}
