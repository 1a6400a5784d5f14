// Configuration errors located at a line of the file, and the YAML line lookups behind them.

package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration error at a line of the file (0: unknown).
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// Errors is every problem yamlcheck found, reported in one run.
type Errors []*Error

// Error joins the problems, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap makes Errors match ErrInvalid.
func (es Errors) Unwrap() error { return ErrInvalid }

// in returns the problems located in file path: "path:line: what", one
// per line.
func (es Errors) in(path string) error { return fileErrors{path, es} }

type fileErrors struct {
	path string
	es   Errors
}

func (f fileErrors) Error() string {
	lines := make([]string, len(f.es))
	for i, e := range f.es {
		if e.Line > 0 {
			lines[i] = fmt.Sprintf("%s:%d: %s", f.path, e.Line, e.Msg)
		} else {
			lines[i] = fmt.Sprintf("%s: %s", f.path, e.Msg)
		}
	}
	return strings.Join(lines, "\n")
}

func (f fileErrors) Unwrap() error { return ErrInvalid }

// Unwrap makes every Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns yaml.v3's "yaml: line N: what" (one per line in a
// TypeError) into an Error at the first line.
func yamlError(err error) *Error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(strings.TrimSpace(msg)); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{Line: n, Msg: m[2]}
	}
	return &Error{Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// lineOf returns the line of a dotted key ("uplink.mode"), or of its
// deepest present parent, or 0.
func lineOf(root *yaml.Node, key string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, k := range strings.Split(key, ".") {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				line, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// lineOfValue returns the line of the first scalar value that msg quotes.
func lineOfValue(n *yaml.Node, msg string) int {
	if n.Kind == yaml.ScalarNode && n.Value != "" && strings.Contains(msg, strconv.Quote(n.Value)) {
		return n.Line
	}
	for _, c := range n.Content {
		if l := lineOfValue(c, msg); l > 0 {
			return l
		}
	}
	return 0
}
