package doctable

import (
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Check holds the tables of the Markdown files to the code. A table takes
// part if it has a column whose header ends in "constant" and a "value"
// or "default" column.
// Every row whose constant cell names a key of want, such as
// "`rendezvous.DefaultKeepaliveInterval`", must state that constant's
// value; every key must have a row; and a row that names a constant with
// want's package prefix ("rendezvous.") that want lacks fails, so that a
// renamed or removed constant cannot linger in the docs.
//
// Values are numbers with an optional unit: durations ("15s", "1.5 s",
// "500 ms", "1 min") for time.Duration constants, sizes ("1500 bytes",
// "1 MiB"), rates ("10/s", "25 MB/s") and plain counts; what follows the
// first number and unit ("(200 Mbit/s)") is commentary.
func Check(t testing.TB, prefix string, want map[string]any, files ...string) {
	t.Helper()
	seen := make(map[string]bool)
	for _, file := range files {
		tables, err := Read(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			nameCol, valueCol := tb.colEnding("constant"), tb.Col("value")
			if valueCol < 0 {
				valueCol = tb.Col("default")
			}
			if nameCol < 0 || valueCol < 0 {
				continue
			}
			for _, row := range tb.Rows {
				if nameCol >= len(row.Cells) || valueCol >= len(row.Cells) {
					continue
				}
				name, ok := Code(row.Cells[nameCol])
				if !ok || !strings.HasPrefix(name, prefix) {
					continue
				}
				where := fmt.Sprintf("%s:%d", filepath.Base(file), row.Line)
				v, ok := want[name]
				if !ok {
					t.Errorf("%s names %s, which the code does not have (or the test does not know)", where, name)
					continue
				}
				seen[name] = true
				if err := matches(row.Cells[valueCol], v); err != nil {
					t.Errorf("%s: %s: %v", where, name, err)
				}
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s has no row in %v", name, files)
		}
	}
}

// matches reports whether a doc cell states v.
func matches(cell string, v any) error {
	got, unit, err := parseCell(cell)
	if err != nil {
		return err
	}
	var want float64
	if d, ok := v.(time.Duration); ok {
		scale, ok := durationUnits[unit]
		if !ok {
			return fmt.Errorf("%q: want a duration, such as %v", cell, d)
		}
		got *= float64(scale)
		want = float64(d)
	} else {
		scale, ok := sizeUnits[unit]
		if !ok {
			return fmt.Errorf("%q: unknown unit %q", cell, unit)
		}
		got *= scale
		rv := reflect.ValueOf(v)
		switch {
		case rv.CanInt():
			want = float64(rv.Int())
		case rv.CanUint():
			want = float64(rv.Uint())
		case rv.CanFloat():
			want = rv.Float()
		default:
			return fmt.Errorf("the test cannot compare a %T", v)
		}
	}
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		return fmt.Errorf("the doc says %q, the code %v", cell, v)
	}
	return nil
}

var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond, "µs": time.Microsecond, "us": time.Microsecond,
	"ms": time.Millisecond, "s": time.Second, "min": time.Minute, "m": time.Minute, "h": time.Hour,
}

var sizeUnits = map[string]float64{
	"": 1, "bytes": 1, "byte": 1, "B": 1, "/s": 1, "B/s": 1,
	"KiB": 1 << 10, "MiB": 1 << 20, "KB": 1e3, "MB": 1e6, "MB/s": 1e6,
}

// parseCell reads the number and unit a cell opens with: "15s",
// "`1 MiB`", "1,500 bytes (one MTU)".
func parseCell(cell string) (float64, string, error) {
	s := strings.TrimSpace(strings.ReplaceAll(cell, "`", ""))
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == ',' || s[i] == '_') {
		i++
	}
	if i == 0 {
		return 0, "", fmt.Errorf("%q does not open with a number", cell)
	}
	n, err := strconv.ParseFloat(strings.NewReplacer(",", "", "_", "").Replace(s[:i]), 64)
	if err != nil {
		return 0, "", fmt.Errorf("%q: %v", cell, err)
	}
	rest := strings.TrimLeft(s[i:], " ")
	unit, _, _ := strings.Cut(rest, " ")
	unit = strings.TrimRight(unit, ",;")
	return n, unit, nil
}
