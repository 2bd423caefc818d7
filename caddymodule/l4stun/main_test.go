package l4stun_test

import (
	"testing"

	"github.com/netsody/superpeer/internal/testcaddy"
)

func TestMain(m *testing.M) { testcaddy.Main(m) }
