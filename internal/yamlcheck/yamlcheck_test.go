package yamlcheck

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type ike struct {
	Proposals []string      `yaml:"proposals"`
	Lifetime  time.Duration `yaml:"lifetime"`
}

type listen struct {
	Address netip.Addr `yaml:"address"`
	Port    int        `yaml:"ike_port"`
}

type base struct {
	Level string `yaml:"level"`
}

type doc struct {
	IKE    ike               `yaml:"ike"`
	Listen listen            `yaml:"listen"`
	Debug  bool              `yaml:"debug"`
	Hosts  map[string]listen `yaml:"hosts"`
	Skip   string            `yaml:"-"`
	base   `yaml:",inline"`
	Rate   float64 `yaml:"rate"`
	Count  uint    `yaml:"count"`
}

func check(t *testing.T, src string) []string {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range Check(&n, reflect.TypeFor[doc]()) {
		out = append(out, strings.Join([]string{itoa(p.Line), p.Msg}, ": "))
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestCheck(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"good", "ike: {proposals: [a, b], lifetime: 8h}\nlisten: {address: 192.0.2.1, ike_port: 500}\ndebug: true\nlevel: info\nrate: 1.5\ncount: 3\nhosts: {a: {ike_port: 1}}\n", nil},
		{"the issue's misspelling", "ike:\n  proposal: [a]\n", []string{`2: ike: unknown key "proposal"; did you mean "proposals"?`}},
		{"top-level typo", "lisen: {}\n", []string{`1: unknown key "lisen"; did you mean "listen"?`}},
		{"no close key", "zzzzzz: 1\n", []string{`1: unknown key "zzzzzz" (valid keys: count, debug, hosts, ike, level, listen, rate)`}},
		{"wrong type names key and type", "listen:\n  ike_port: five hundred\n", []string{`2: listen.ike_port: expected an integer, got "five hundred"`}},
		{"bool", "debug: yes please\n", []string{`1: debug: expected true or false, got "yes please"`}},
		{"negative uint", "count: -1\n", []string{`1: count: expected a non-negative integer, got "-1"`}},
		{"list expected", "ike: {proposals: aes}\n", []string{`1: ike.proposals: expected a list ([a, b] or one "- item" per line), got "aes"`}},
		{"mapping expected", "ike: [1]\n", []string{`1: ike: expected a mapping of keys (lifetime, proposals), got a list`}},
		{"map values and every problem in one run", "hosts:\n  a: {ike_prot: 1}\ndebug: 3\nlevl: x\n",
			[]string{`2: hosts.a: unknown key "ike_prot"; did you mean "ike_port"?`, `3: debug: expected true or false, got "3"`, `4: unknown key "levl"; did you mean "level"?`}},
		{"null is fine", "ike:\nlisten: ~\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := check(t, tt.src)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestClosest(t *testing.T) {
	valid := []string{"proposals", "psk", "pool", "identities"}
	for in, want := range map[string]string{"proposal": "proposals", "identites": "identities", "pol": "pool", "xyzzy": ""} {
		if got := Closest(in, valid); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCheck: any YAML the parser accepts is walked without a panic or a
// hang, and every problem carries a message.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"ike: {proposal: [a]}\n", "a: &x {b: *x}\n", "<<: {debug: true}\n", "hosts: {a: [1, 2]}\n", "- 1\n- 2\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var n yaml.Node
		if yaml.Unmarshal(b, &n) != nil {
			return
		}
		for _, p := range Check(&n, reflect.TypeFor[doc]()) {
			if p.Msg == "" {
				t.Fatalf("empty message for %q", b)
			}
		}
	})
}
