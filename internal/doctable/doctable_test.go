package doctable

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
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
