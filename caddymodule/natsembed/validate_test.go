package natsembed

import (
	"strings"
	"testing"
)

// Each option error says what to fix, and a sound configuration passes.
func TestValidate(t *testing.T) {
	good := App{Listen: "127.0.0.1:4222", ClusterListen: "10.0.0.1:6222", Routes: []string{"nats-route://10.0.0.2:6222"},
		TLSCert: "n.pem", TLSKey: "n.key", TLSCA: "ca.pem"}
	if err := good.Validate(); err != nil {
		t.Fatalf("sound configuration refused: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*App)
		want string
	}{
		{"routes without cluster_listen", func(a *App) { a.ClusterListen = "" }, "routes need cluster_listen"},
		{"cert without key", func(a *App) { a.TLSKey = "" }, "tls_cert and tls_key go together"},
		{"route TLS without its CA", func(a *App) { a.TLSCA = "" }, "the CA that routes verify each other against"},
		{"public listen without token", func(a *App) { a.Listen = "10.0.0.1:4222" }, "set a token"},
		{"route URL of another scheme", func(a *App) { a.Routes = []string{"http://10.0.0.2:6222"} }, "must be nats-route://"},
	} {
		a := good
		c.edit(&a)
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
