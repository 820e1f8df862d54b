// Package words splits an iptables rule line into its words as iptables-restore does,
// for every reader of rule text (the iptables fake, the tracer's iptables-save parser):
// blanks separate words, double quotes group them, and inside quotes a backslash
// escapes the next character. iptables-save quotes the same way, so its output splits
// back into the words that made it.
package words

import (
	"errors"
	"strings"
)

// ErrUnterminatedQuote is returned for a line whose last quote is never closed.
var ErrUnterminatedQuote = errors.New("unterminated quote")

// Split returns the words of line.
func Split(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, inQuote := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote, inWord = !inQuote, true
		case (c == ' ' || c == '\t') && !inQuote:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote {
		return nil, ErrUnterminatedQuote
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
