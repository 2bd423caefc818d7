package identity

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// The tables of defaults in docs/CONFIG.md state what the code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "identity.", map[string]any{
		"identity.DefaultProofOfWorkBits": DefaultProofOfWorkBits,
	}, "../docs/CONFIG.md")
}
