// Package yamlcheck walks a decoded YAML node tree against the Go type it
// is meant for, before the decoder runs, and reports every problem in
// operator terms: the key path (`ike.proposals`), the line, what was
// expected, and the closest valid key for a misspelt one:
//
//	ike.proposals: unknown key "proposal"; did you mean "proposals"?
//	listen.ike_port: expected an integer, got "five hundred"
//
// yaml.v3's own errors name a Go type (`field ike not found in type
// config.Config`) and no key path; the configs run this first. Types with
// their own decoding (yaml.Unmarshaler, encoding.TextUnmarshaler) are left
// to the decoder.
package yamlcheck

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Problem is one finding.
type Problem struct {
	Line int    // 1-based, 0 when unknown
	Path string // dotted key path, [i] for sequence items
	Msg  string // what is wrong, prefixed with the path
}

func (p Problem) String() string { return p.Msg }

var (
	unmarshalerT = reflect.TypeFor[yaml.Unmarshaler]()
	textT        = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationT    = reflect.TypeFor[time.Duration]()
	nodeT        = reflect.TypeFor[yaml.Node]()
)

// Check walks root (a document or mapping node) against t (the struct the
// document decodes into) and returns every problem, in document order.
func Check(root *yaml.Node, t reflect.Type) []Problem {
	var c checker
	n := root
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n == nil || n.Kind == 0 { // empty input: the caller says so
		return nil
	}
	c.walk(n, t, "")
	sort.SliceStable(c.out, func(i, j int) bool { return c.out[i].Line < c.out[j].Line })
	return c.out
}

type checker struct {
	out   []Problem
	depth int
}

func (c *checker) add(n *yaml.Node, path, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if path != "" {
		msg = path + ": " + msg
	}
	c.out = append(c.out, Problem{Line: n.Line, Path: path, Msg: msg})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *checker) walk(n *yaml.Node, t reflect.Type, path string) {
	if c.depth > 64 { // a document nested this deep is not a config
		return
	}
	c.depth++
	defer func() { c.depth-- }()
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nodeT { // kept raw by the decoder
		return
	}
	if t == durationT {
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, "expected a duration such as 30s or 5m, got %s", describe(n))
		}
		return
	}
	if t.Implements(unmarshalerT) || reflect.PointerTo(t).Implements(unmarshalerT) ||
		t.Implements(textT) || reflect.PointerTo(t).Implements(textT) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, "expected a mapping of keys (%s), got %s", strings.Join(keysOf(t), ", "), describe(n))
			return
		}
		fields := fieldsOf(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" { // merge key: check what is merged in
				c.walk(v, t, path)
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				c.unknown(k, path, k.Value, keysOf(t))
				continue
			}
			c.walk(v, ft, join(path, k.Value))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, "expected a mapping, got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && n.Kind == yaml.ScalarNode {
			return // []byte from a string
		}
		if n.Kind != yaml.SequenceNode {
			c.add(n, path, "expected a list ([a, b] or one \"- item\" per line), got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			c.walk(item, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	case reflect.Interface:
	default:
		c.scalar(n, t, path)
	}
}

func (c *checker) scalar(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		c.add(n, path, "expected %s, got %s", kindName(t), describe(n))
		return
	}
	tag := n.ShortTag()
	ok := true
	switch t.Kind() {
	case reflect.Bool:
		// yaml.v3 still decodes YAML 1.1's yes/no/on/off into a bool.
		switch strings.ToLower(n.Value) {
		case "yes", "no", "on", "off", "y", "n":
			ok = n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0
		default:
			ok = tag == "!!bool"
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		ok = tag == "!!int"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		ok = tag == "!!int" && !strings.HasPrefix(n.Value, "-")
	case reflect.Float32, reflect.Float64:
		ok = tag == "!!int" || tag == "!!float"
	}
	if !ok {
		c.add(n, path, "expected %s, got %q", kindName(t), n.Value)
	}
}

func (c *checker) unknown(k *yaml.Node, path, key string, valid []string) {
	full := join(path, key)
	if s := Closest(key, valid); s != "" {
		c.out = append(c.out, Problem{Line: k.Line, Path: full, Msg: fmt.Sprintf("%sunknown key %q; did you mean %q?", prefix(path), key, s)})
		return
	}
	c.out = append(c.out, Problem{Line: k.Line, Path: full, Msg: fmt.Sprintf("%sunknown key %q (valid keys: %s)", prefix(path), key, strings.Join(valid, ", "))})
}

func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.Kind().String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "something else"
}

// fieldsOf maps the YAML keys of struct t (inline structs merged) to
// their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range fieldsOf(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default key
		}
		out[name] = f.Type
	}
	return out
}

func keysOf(t reflect.Type) []string {
	var ks []string
	for k := range fieldsOf(t) {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Closest returns the valid key nearest to key (edit distance at most a
// third of its length, at least 2; or a key that starts with it or it
// starts with), or "".
func Closest(key string, valid []string) string {
	best, bestD := "", 1<<30
	limit := max(2, len(key)/3)
	lk := strings.ToLower(key)
	for _, v := range valid {
		d := distance(lk, strings.ToLower(v))
		if d < bestD || (d == bestD && v < best) {
			best, bestD = v, d
		}
	}
	if bestD <= limit {
		return best
	}
	for _, v := range valid {
		if len(key) >= 3 && (strings.HasPrefix(v, lk) || strings.HasPrefix(lk, v)) {
			return v
		}
	}
	return ""
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
