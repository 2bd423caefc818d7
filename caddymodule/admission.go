package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/netsody/superpeer/rendezvous"
)

// Admission: who may register with the super peer. The netsody app's
// admission modules (namespace netsody.admission) form a chain, cheapest
// first, and a device must pass all of them; rendezvous asks the chain
// (rendezvous.Config.Admit) once a registration's signature verified.
// After a reload that changes the chain, registered devices are checked
// again (rendezvous.Server.Recheck).

// Admitter is a module in the netsody.admission namespace: it decides
// whether a device may register. An error refuses it, with the error's
// text; one that wraps rendezvous.ErrTryLater tells it to retry later.
// Admit is called concurrently; it must return when ctx ends.
type Admitter interface {
	Admit(ctx context.Context, req rendezvous.AdmissionRequest) error
}

// admissionStater is an Admitter whose decisions depend on more than its
// JSON (an allowlist's file): its state, in a string, tells a reload that
// changed it.
type admissionStater interface {
	admissionState() string
}

// admissionCost orders the chain, cheapest first, whatever order the
// configuration lists the modules in: a device refused by a map lookup
// costs no hashing, and one refused by either costs no callout. Modules
// of other packages cost as much as a callout.
func admissionCost(m Admitter) int {
	switch m.(type) {
	case *AllowAll:
		return 0
	case *Allowlist:
		return 1
	case *ProofOfWork:
		return 2
	}
	return 3
}

// admissionChain is the app's admission modules, cheapest first.
type admissionChain struct {
	mods  []Admitter
	names []string // module IDs, for refusals
	// key identifies what the chain decides: the modules' IDs, their
	// JSON and their state. Two configs with one key admit alike.
	key string
	// observe, if set, is told each module's decision (for metrics).
	observe func(module string, err error)
}

// loadAdmission loads the app's admission modules into a chain.
func (a *App) loadAdmission(ctx caddy.Context) error {
	if len(a.AdmissionRaw) == 0 {
		return nil
	}
	vals, err := ctx.LoadModule(a, "AdmissionRaw")
	if err != nil {
		return fmt.Errorf("netsody: loading admission modules: %w", err)
	}
	var mods []Admitter
	for _, v := range vals.([]any) {
		m, ok := v.(Admitter)
		if !ok {
			return fmt.Errorf("netsody: admission module %T does not implement Admitter", v)
		}
		mods = append(mods, m)
	}
	slices.SortStableFunc(mods, func(x, y Admitter) int { return admissionCost(x) - admissionCost(y) })
	h := sha256.New()
	for _, m := range mods {
		id := string(m.(caddy.Module).CaddyModule().ID)
		a.admission.names = append(a.admission.names, id)
		js, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("netsody: %s: %w", id, err)
		}
		fmt.Fprintf(h, "%s\x00%s\x00", id, js)
		if s, ok := m.(admissionStater); ok {
			fmt.Fprintf(h, "%s\x00", s.admissionState())
		}
	}
	a.admission.mods = mods
	a.admission.key = hex.EncodeToString(h.Sum(nil))
	return nil
}

// admit is rendezvous.Config.Admit for the chain; nil for a chain that
// admits everyone.
func (c *admissionChain) admit() func(context.Context, rendezvous.AdmissionRequest) error {
	if !slices.ContainsFunc(c.mods, func(m Admitter) bool { return admissionCost(m) > 0 }) {
		return nil
	}
	return func(ctx context.Context, req rendezvous.AdmissionRequest) error {
		for i, m := range c.mods {
			err := m.Admit(ctx, req)
			if c.observe != nil && admissionCost(m) > 0 {
				c.observe(c.names[i], err)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", c.names[i], err)
			}
		}
		return nil
	}
}

// unmarshalAdmission parses the global netsody option's admission block:
// one line, or block, per module, in the module's own syntax.
//
//	admission {
//		allow_all
//		allowlist [<peer_id>...] { peer <peer_id>...; file <path> }
//		pow [<bits>]
//		http <url> { ... }
//	}
func (a *App) unmarshalAdmission(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	return eachOption(d, func(name string) error {
		unm, err := caddyfile.UnmarshalModule(d, "netsody.admission."+name)
		if err != nil {
			return err
		}
		a.AdmissionRaw = append(a.AdmissionRaw, caddyconfig.JSONModuleObject(unm, "policy", name, nil))
		return nil
	})
}
