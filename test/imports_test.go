package test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection keeps the layers apart: cmd -> mx -> policy, routing,
// rbl, queue -> table -> envelope. go list reports each package's imports.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/mxfront/mxfront/"
	// forbidden[pkg prefix] = module packages it must not import.
	forbidden := map[string][]string{
		"envelope":     {""}, // stdlib only: no module package at all
		"table":        {"mx", "policy", "routing", "rbl", "queue", "cmd", "test"},
		"routing":      {"mx", "policy", "rbl", "queue", "cmd", "test"},
		"rbl":          {"mx", "policy", "routing", "queue", "table", "cmd", "test"},
		"policy":       {"mx", "queue", "cmd", "test"},
		"queue":        {"mx", "policy", "rbl", "cmd", "test"},
		"mx":           {"cmd", "test"},
		"cmd":          {"test"},
		"scripts":      {"test"},
		"test/harness": {"mx", "policy", "queue", "cmd"},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], mod)
		if !ok {
			continue
		}
		for prefix, bad := range forbidden {
			if pkg != prefix && !strings.HasPrefix(pkg, prefix+"/") {
				continue
			}
			checked++
			for _, imp := range f[1:] {
				dep, ok := strings.CutPrefix(imp, mod)
				if !ok {
					if prefix == "envelope" && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
						t.Errorf("%s imports %s: envelope is stdlib only", pkg, imp)
					}
					continue
				}
				for _, b := range bad {
					if b == "" || dep == b || strings.HasPrefix(dep, b+"/") {
						t.Errorf("%s imports %s: against the layering", pkg, dep)
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages checked: go list output changed?\n%s", checked, out)
	}
}
