// Package doctable reads the tables of the project's Markdown docs, so
// that tests can hold a doc's table of defaults, limits or refusals to the
// code it describes.
package doctable

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Table is one Markdown table: its header cells and its rows.
type Table struct {
	File   string
	Header []string
	Rows   []Row
}

// Row is one table row, with its line number in the file.
type Row struct {
	Line  int
	Cells []string
}

// Col returns the index of the header cell named name (case-insensitive),
// or -1.
func (t Table) Col(name string) int {
	for i, h := range t.Header {
		if strings.EqualFold(h, name) {
			return i
		}
	}
	return -1
}

func (t Table) colEnding(suffix string) int {
	for i, h := range t.Header {
		if strings.HasSuffix(strings.ToLower(h), suffix) {
			return i
		}
	}
	return -1
}

// Read returns every table in the Markdown file at path.
func Read(path string) ([]Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		tables []Table
		cur    *Table
		n      int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			cur = nil
			continue
		}
		cells := split(line)
		switch {
		case cur == nil:
			tables = append(tables, Table{File: path, Header: cells})
			cur = &tables[len(tables)-1]
		case isRule(cells):
		default:
			cur.Rows = append(cur.Rows, Row{Line: n, Cells: cells})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return tables, nil
}

// split cuts a table line into trimmed cells; `\|` is a literal bar.
func split(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			b.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(b.String()))
			b.Reset()
		default:
			b.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(b.String()))
}

func isRule(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, "-: ") != "" {
			return false
		}
	}
	return true
}

// Code returns the text of a cell that is one code span, such as
// "`rendezvous.DefaultKeepaliveInterval`", without the backticks.
func Code(cell string) (string, bool) {
	if len(cell) < 3 || cell[0] != '`' || cell[len(cell)-1] != '`' || strings.Count(cell, "`") != 2 {
		return "", false
	}
	return cell[1 : len(cell)-1], true
}
