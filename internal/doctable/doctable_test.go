package doctable

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	md := "# Title\n\n| name | value |\n|---|---:|\n| `a.B` | 15s |\n| x \\| y | 2 |\n\ntext\n| other |\n|---|\n| 1 |\n"
	path := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(path, []byte(md), 0o600); err != nil {
		t.Fatal(err)
	}
	tables, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Table{
		{File: path, Header: []string{"name", "value"}, Rows: []Row{{5, []string{"`a.B`", "15s"}}, {6, []string{"x | y", "2"}}}},
		{File: path, Header: []string{"other"}, Rows: []Row{{11, []string{"1"}}}},
	}
	if !reflect.DeepEqual(tables, want) {
		t.Fatalf("Read = %+v, want %+v", tables, want)
	}
	if c := tables[0].Col("VALUE"); c != 1 {
		t.Errorf("Col(VALUE) = %d, want 1", c)
	}
	for cell, want := range map[string]string{"`a.B`": "a.B", "a.B": "", "`a` `b`": "", "``": ""} {
		if got, _ := Code(cell); got != want {
			t.Errorf("Code(%q) = %q, want %q", cell, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	md := "| what | constant | value |\n|---|---|---|\n" +
		"| a | `p.A` | 15s |\n| b | `p.B` | 1 MiB |\n| c | `p.C` | 25 MB/s (200 Mbit/s) |\n" +
		"| d | `p.D` | 500 ms |\n| e | `p.E` | 1,500 bytes |\n| f | `q.F` | whatever |\n"
	path := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(path, []byte(md), 0o600); err != nil {
		t.Fatal(err)
	}
	good := map[string]any{"p.A": 15 * time.Second, "p.B": 1 << 20, "p.C": 25e6, "p.D": 500 * time.Millisecond, "p.E": uint16(1500)}
	Check(t, "p.", good, path)

	for name, bad := range map[string]map[string]any{
		"a wrong value":        {"p.A": 16 * time.Second, "p.B": 1 << 20, "p.C": 25e6, "p.D": 500 * time.Millisecond, "p.E": 1500},
		"a number for a time":  {"p.A": 15, "p.B": 1 << 20, "p.C": 25e6, "p.D": 500 * time.Millisecond, "p.E": 1500},
		"a constant in no row": {"p.A": 15 * time.Second, "p.B": 1 << 20, "p.C": 25e6, "p.D": 500 * time.Millisecond, "p.E": 1500, "p.G": 1},
		"a row the code lacks": {"p.A": 15 * time.Second, "p.B": 1 << 20, "p.C": 25e6, "p.D": 500 * time.Millisecond},
	} {
		rec := &recorder{TB: t}
		Check(rec, "p.", bad, path)
		if !rec.failed {
			t.Errorf("%s: Check passed", name)
		}
	}
}

// recorder is a testing.TB that notes failures instead of failing.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatal(...any)          { r.failed = true }
func (r *recorder) Helper()               {}
