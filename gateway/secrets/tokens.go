// Package secrets parses the classic secrets files of strongSwan
// (ipsec.secrets, ipsec.secrets(5)) and pppd (chap-secrets, pppd(8)
// "AUTHENTICATION") so an existing strongSwan + xl2tpd installation can be
// migrated. The parsers are pure functions over bytes; they never log.
package secrets

import (
	"strings"
)

// splitFields splits a line into whitespace-separated fields, honouring
// double and single quotes (which are removed) and stopping at an unquoted
// '#'. It reports an unterminated quote.
func splitFields(line string) ([]string, bool) {
	var out []string
	var cur strings.Builder
	inField := false
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
				continue
			}
			if c == '\\' && quote == '"' && i+1 < len(line) {
				i++
				c = line[i]
			}
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
			inField = true
		case c == '#':
			if inField {
				out = append(out, cur.String())
			}
			return out, true
		case c == ' ' || c == '\t' || c == '\r':
			if inField {
				out = append(out, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			cur.WriteByte(c)
			inField = true
		}
	}
	if quote != 0 {
		return nil, false
	}
	if inField {
		out = append(out, cur.String())
	}
	return out, true
}
