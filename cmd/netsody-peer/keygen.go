package main

import (
	"context"
	"fmt"
	"os"

	"github.com/netsody/superpeer/identity"
)

// runKeygen writes a new identity to --out (mode 0600, never over an
// existing file) and prints its peer ID, alone on its line, so that
// ID=$(netsody-peer keygen --out FILE) works.
func runKeygen(_ context.Context, args []string) error {
	fs := newFlagSet("keygen", "--out FILE")
	out := fs.String("out", "", "`file` to write the new identity to (mode 0600; an existing file is never overwritten)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("keygen", "unexpected argument %q", pos[0])
	}
	if *out == "" {
		return usagef("keygen", "--out is required")
	}
	id, err := identity.Generate()
	if err != nil {
		return err
	}
	if err := id.Save(*out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, id.PeerID())
	return nil
}
