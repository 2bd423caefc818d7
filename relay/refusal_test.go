package relay

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// refusalNames returns the names of the refusals in the refusals list, in
// its order, and every refusal variable declared in refusal.go.
func refusalNames(t *testing.T) (listed []string, declared map[string]bool) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "refusal.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared = make(map[string]bool)
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Names) != 1 || len(spec.Values) != 1 {
			return true
		}
		name := spec.Names[0].Name
		if u, ok := spec.Values[0].(*ast.UnaryExpr); ok {
			if c, ok := u.X.(*ast.CompositeLit); ok && isIdent(c.Type, "refusal") {
				declared[name] = true
			}
		}
		if c, ok := spec.Values[0].(*ast.CompositeLit); ok && name == "refusals" {
			for _, e := range c.Elts {
				listed = append(listed, e.(*ast.Ident).Name)
			}
		}
		return true
	})
	return listed, declared
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// markdownTable returns the rows of the table in a markdown file whose
// header row is header, as cells without their backticks.
func markdownTable(t *testing.T, path string, header ...string) [][]string {
	t.Helper()
	tables, err := doctable.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if !slices.Equal(tb.Header, header) {
			continue
		}
		var rows [][]string
		for _, r := range tb.Rows {
			row := make([]string, len(r.Cells))
			for i, c := range r.Cells {
				row[i] = strings.Trim(c, "`")
			}
			rows = append(rows, row)
		}
		return rows
	}
	t.Fatalf("%s has no table headed %q", path, header)
	return nil
}

// The refusal table in docs/PROTOCOL.md names every refusal in
// refusal.go once, with its status and Proxy-Status error type; and every
// refusal is in the refusals list that Stats counts by.
func TestRefusalTable(t *testing.T) {
	listed, declared := refusalNames(t)
	if len(listed) != len(refusals) {
		t.Fatalf("parsed %d names for %d refusals", len(listed), len(refusals))
	}
	for name := range declared {
		if !strings.HasPrefix(name, "refuse") {
			t.Errorf("refusal %s: its name must start with refuse", name)
		}
	}
	byName := make(map[string]*refusal)
	for i, name := range listed {
		if !declared[name] {
			t.Errorf("%s is listed in refusals but not declared as one", name)
		}
		if byName[name] != nil {
			t.Errorf("%s is listed twice", name)
		}
		byName[name] = refusals[i]
		if refusals[i].index() != i || refusals[i].with().index() != i {
			t.Errorf("%s: index %d, want %d", name, refusals[i].index(), i)
		}
	}
	for name := range declared {
		if byName[name] == nil {
			t.Errorf("%s is not in refusals: Stats cannot count it", name)
		}
	}
	documented := make(map[string]bool)
	for _, row := range markdownTable(t, "../docs/PROTOCOL.md", "refusal", "status", "Proxy-Status error", "when") {
		name := row[0]
		r := byName[name]
		if r == nil {
			t.Errorf("docs/PROTOCOL.md lists %s, which relay/refusal.go does not declare", name)
			continue
		}
		if documented[name] {
			t.Errorf("docs/PROTOCOL.md lists %s twice", name)
		}
		documented[name] = true
		if status, _ := strconv.Atoi(row[1]); status != r.status || row[2] != r.errType {
			t.Errorf("docs/PROTOCOL.md: %s is %s %s, the code says %d %s", name, row[1], row[2], r.status, r.errType)
		}
	}
	for name := range byName {
		if !documented[name] {
			t.Errorf("docs/PROTOCOL.md's refusal table has no row for %s", name)
		}
	}
}

// Refusals are counted by refusal and reported by status, as the metrics
// export them.
func TestRefusedByStatus(t *testing.T) {
	var s Stats
	s.countRefusal(refuseNotHTTPS)
	s.countRefusal(refuseNoRegistration)
	s.countRefusal(refuseNotPeerID.with("hostname", "example.com"))
	s.countRefusal(refusePairTimeout.with("peer", "10s"))
	got := s.Refused()
	if len(got) != 2 || got[403] != 3 || got[504] != 1 {
		t.Fatalf("Refused() = %v, want 403: 3 and 504: 1", got)
	}
}
