package peer

import (
	"testing"

	"github.com/netsody/superpeer/identity"
)

// A second listen address that cannot be opened fails New, unless it is
// optional: then the device runs on the first socket alone.
func TestListenAddr6Optional(t *testing.T) {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Identity: id, ListenAddr: "127.0.0.1:0", ListenAddr6: "[2001:db8::1]:0"} // documentation prefix: on no interface
	if d, err := New(cfg); err == nil {
		d.Close()
		t.Fatal("New opened a socket on an address of no interface")
	}
	cfg.ListenAddr6Optional = true
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("with ListenAddr6Optional: %v", err)
	}
	defer d.Close()
	if as := d.LocalAddrs(); len(as) != 1 || !as[0].Addr().Is4() {
		t.Fatalf("sockets %v, want the IPv4 one alone", as)
	}
}
