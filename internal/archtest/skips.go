package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Skip is one call of a testing Skip method (x.Skip, x.Skipf, x.SkipNow)
// at File:Line, File module-relative.
type Skip struct {
	File string
	Line int
}

// BareSkips lists every Skip/Skipf/SkipNow method call in the Go files
// under root (testdata, hidden directories and nested modules left out),
// except in internal/testenv, the one place a test may skip from, and in
// the files skipExempt names.
func BareSkips(root string) ([]Skip, error) {
	var out []Skip
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == root {
				return nil
			}
			name := d.Name()
			if name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			if rel, _ := filepath.Rel(root, path); filepath.ToSlash(rel) == "internal/testenv" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if skipExempt(filepath.ToSlash(rel)) {
			return nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
				switch sel.Sel.Name {
				case "Skip", "Skipf", "SkipNow":
					out = append(out, Skip{File: filepath.ToSlash(rel), Line: fset.Position(call.Pos()).Line})
				}
			}
			return true
		})
		return nil
	})
	return out, err
}

// AllowedSkips are the skips outside internal/testenv that are not a test
// deciding by itself that the machine lacks something, each justified;
// the value is how many calls the file may hold.
var AllowedSkips = map[string]int{
	// InHost re-executes a test inside a namespace; when the child skipped
	// (through testenv, loudly, in its output logged above), the parent
	// reports the same skip rather than a pass.
	"internal/netns/reexec.go": 1,
}

// skipExempt reports files whose Skip calls are not tests skipping: the
// benchmark command's suites (bench/, non-test files) run under
// runScoped's testing.TB stand-in, where a Skip ends the suite and its
// reason (from testenv) is printed in BENCHMARKS.md.
func skipExempt(file string) bool {
	return strings.HasPrefix(file, "bench/") && !strings.HasSuffix(file, "_test.go")
}
