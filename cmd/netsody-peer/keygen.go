package main

import (
	"context"
	"fmt"
	"os"

	"github.com/netsody/superpeer/identity"
)

// runKeygen writes a new identity to --out (mode 0600, never over an
// existing file) and prints its peer ID, alone on its line, so that
// ID=$(netsody-peer keygen --out FILE) works. With --pow N it first mines
// a proof of work of N bits for the key (a super peer's pow admission
// demands one), reporting progress on stderr.
func runKeygen(ctx context.Context, args []string) error {
	fs := newFlagSet("keygen", "--out FILE [--pow BITS]")
	out := fs.String("out", "", "`file` to write the new identity to (mode 0600; an existing file is never overwritten)")
	pow := fs.Int("pow", 0, fmt.Sprintf("mine a proof of work with this many leading zero `bits` (0 to %d; Netsody's default is %d, about 16.8 million hashes)",
		identity.MaxProofOfWorkBits, identity.DefaultProofOfWorkBits))
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
	if *pow < 0 || *pow > identity.MaxProofOfWorkBits {
		return usagef("keygen", "--pow must be 0 to %d bits, got %d", identity.MaxProofOfWorkBits, *pow)
	}
	if _, err := os.Lstat(*out); err == nil {
		// Before the mining, not after: Save refuses it too.
		return fmt.Errorf("identity: %s already exists; refusing to overwrite an identity", *out)
	}
	id, err := identity.Generate()
	if err != nil {
		return err
	}
	if *pow > 0 {
		expected := float64(uint64(1) << *pow)
		id.ProofOfWork, err = identity.MineProofOfWork(ctx, id.PeerID(), *pow, func(tried uint64) {
			fmt.Fprintf(os.Stderr, "mining proof of work: %d hashes, %.0f%% of the %.0f expected\n", tried, 100*float64(tried)/expected, expected)
		})
		if err != nil {
			return err
		}
	}
	if err := id.Save(*out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, id.PeerID())
	return nil
}
