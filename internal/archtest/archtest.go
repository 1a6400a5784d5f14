// Package archtest checks the direction of imports inside the module: the
// protocol cores (uplink/, downlink/, ipstack/) never depend on a daemon
// (gateway/, bridge/) or on anything built on top of them, directly or
// through a helper package. It parses import clauses only (go/parser), so
// the check needs no build and sees files of every build tag.
package archtest

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Rule forbids every package under one of From to reach a package under
// one of Forbidden. Prefixes are module-relative directories ("uplink").
type Rule struct {
	Name      string
	From      []string
	Forbidden []string
	// Tests: the From packages' test files count too (their imports, and
	// what those reach).
	Tests bool
	// Direct: only the From packages' own imports count, not what the
	// imported packages reach in turn.
	Direct bool
	// Allow lists known arrows ("from -> to", exact packages) that do not
	// count, each to be removed by a later change; a new arrow still fails.
	Allow []string
}

// Violation is one forbidden arrow: Path runs from a From package to a
// Forbidden one, each step an import.
type Violation struct {
	Rule string
	Path []string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: %s", v.Rule, strings.Join(v.Path, " -> "))
}

// Graph maps a module-relative package directory to the module-relative
// directories it imports, apart for non-test and test files.
type Graph struct {
	Imports     map[string][]string
	TestImports map[string][]string
}

// Load parses the import clauses of every .go file under root (the
// directory of go.mod for module), skipping testdata, hidden directories
// and nested modules.
func Load(root, module string) (*Graph, error) {
	g := &Graph{Imports: map[string][]string{}, TestImports: map[string][]string{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		m := g.Imports
		if strings.HasSuffix(path, "_test.go") {
			m = g.TestImports
		}
		if _, ok := m[pkg]; !ok {
			m[pkg] = nil
		}
		for _, is := range f.Imports {
			p, err := strconv.Unquote(is.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			var dep string
			switch {
			case p == module:
				dep = "."
			case strings.HasPrefix(p, module+"/"):
				dep = strings.TrimPrefix(p, module+"/")
			default:
				continue
			}
			if dep != pkg && !slices.Contains(m[pkg], dep) {
				m[pkg] = append(m[pkg], dep)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, m := range []map[string][]string{g.Imports, g.TestImports} {
		for k := range m {
			slices.Sort(m[k])
		}
	}
	return g, nil
}

func under(pkg string, prefixes []string) bool {
	for _, p := range prefixes {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

// Check returns every package of a rule's From set that reaches a
// forbidden package, with one shortest import path each.
func (g *Graph) Check(rules []Rule) []Violation {
	var pkgs []string
	for p := range g.Imports {
		pkgs = append(pkgs, p)
	}
	for p := range g.TestImports {
		if _, ok := g.Imports[p]; !ok {
			pkgs = append(pkgs, p)
		}
	}
	slices.Sort(pkgs)
	var out []Violation
	for _, r := range rules {
		for _, p := range pkgs {
			if !under(p, r.From) {
				continue
			}
			if path := g.reach(p, r); path != nil {
				out = append(out, Violation{Rule: r.Name, Path: path})
			}
		}
	}
	return out
}

// reach searches breadth-first from pkg for a forbidden package and
// returns the path to the first one found.
func (g *Graph) reach(pkg string, r Rule) []string {
	prev := map[string]string{pkg: ""}
	first := slices.Clone(g.Imports[pkg])
	if r.Tests {
		first = append(first, g.TestImports[pkg]...)
	}
	queue := []string{}
	for _, d := range first {
		if _, seen := prev[d]; !seen {
			prev[d] = pkg
			queue = append(queue, d)
		}
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if under(d, r.Forbidden) {
			var path []string
			for at := d; at != ""; at = prev[at] {
				path = append([]string{at}, path...)
			}
			return path
		}
		if r.Direct {
			continue
		}
		for _, n := range g.Imports[d] {
			if slices.Contains(r.Allow, d+" -> "+n) {
				continue
			}
			if _, seen := prev[n]; !seen {
				prev[n] = d
				queue = append(queue, n)
			}
		}
	}
	return nil
}
