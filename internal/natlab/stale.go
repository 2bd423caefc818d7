package natlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Namespace names are "nl-<pid>-<start>-<seq>-<lab>-<node>": <pid> and
// <start> (the process start time in clock ticks since boot, base 36) name
// the owning process, so a namespace whose owner is gone can be told from
// one of a live test running beside it, even after the pid was reused.
// Interface names are fixed and short (eth0, wan, up0, p3) because every
// interface is created inside its namespace, so the namespace names need not
// fit the 15 characters of an interface name.
const nsPrefix = "nl-"

// selfOwner returns "<pid>-<start>" for this process.
func selfOwner() (string, error) {
	pid := os.Getpid()
	start, err := processStart(pid)
	if err != nil {
		return "", fmt.Errorf("natlab: reading this process's start time: %w", err)
	}
	return strconv.Itoa(pid) + "-" + start, nil
}

// processStart returns the start time of process pid (field 22 of
// /proc/<pid>/stat) in base 36.
func processStart(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", errors.New("malformed stat")
	}
	fields := strings.Fields(string(b[i+1:])) // from field 3 on
	if len(fields) < 20 {
		return "", errors.New("malformed stat")
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return "", fmt.Errorf("malformed stat: %w", err)
	}
	return strconv.FormatUint(ticks, 36), nil
}

// parseOwner returns the pid and start time that a lab namespace name
// carries.
func parseOwner(ns string) (pid int, start string, ok bool) {
	rest, ok := strings.CutPrefix(ns, nsPrefix)
	if !ok {
		return 0, "", false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) < 3 {
		return 0, "", false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	return pid, parts[1], true
}

// RemoveStale removes lab namespaces whose owning process no longer runs (it
// was killed, or a test timed out) and kills what still runs in them. It
// leaves alone namespaces of live processes, including other test binaries
// that run at the same time. New calls it; it returns the names it removed.
func RemoveStale() ([]string, error) {
	entries, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natlab: listing namespaces: %w", err)
	}
	var stale []string
	for _, e := range entries {
		pid, start, ok := parseOwner(e.Name())
		if !ok {
			continue
		}
		if now, err := processStart(pid); err == nil && now == start {
			continue // owner alive
		}
		stale = append(stale, e.Name())
	}
	if err := removeNamespaces(stale); err != nil {
		return stale, fmt.Errorf("natlab: removing stale namespaces: %w", err)
	}
	return stale, nil
}
