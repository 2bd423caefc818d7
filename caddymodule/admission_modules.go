package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

func init() {
	caddy.RegisterModule(new(AllowAll))
	caddy.RegisterModule(new(Allowlist))
	caddy.RegisterModule(new(ProofOfWork))
}

// AllowAll admits every device: the default, and what a chain without
// other modules does.
type AllowAll struct{}

// CaddyModule returns the Caddy module information.
func (*AllowAll) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "netsody.admission.allow_all", New: func() caddy.Module { return new(AllowAll) }}
}

// Admit admits.
func (*AllowAll) Admit(context.Context, rendezvous.AdmissionRequest) error { return nil }

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	allow_all
func (*AllowAll) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() || d.NextBlock(d.Nesting()) {
		return d.ArgErr()
	}
	return nil
}

// Allowlist admits the devices it lists: peer IDs inline, from a file,
// or both. The file is read when the config loads, so `caddy reload`
// re-reads it; a missing or malformed file fails the reload, and the
// running config goes on.
type Allowlist struct {
	// Peers are peer IDs, 64 hex digits each.
	Peers []string `json:"peers,omitempty"`
	// File holds one peer ID a line; blank lines and lines starting with
	// # are skipped. At most maxAllowlistFile bytes.
	File string `json:"file,omitempty"`

	allowed map[identity.PeerID]struct{}
}

// CaddyModule returns the Caddy module information.
func (*Allowlist) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "netsody.admission.allowlist", New: func() caddy.Module { return new(Allowlist) }}
}

// Provision parses the inline peer IDs and reads the file.
func (l *Allowlist) Provision(caddy.Context) error {
	l.allowed = make(map[identity.PeerID]struct{})
	for _, s := range l.Peers {
		p, err := identity.ParsePeerID(s)
		if err != nil {
			return fmt.Errorf("allowlist: peer %q: %w", s, err)
		}
		l.allowed[p] = struct{}{}
	}
	if l.File != "" {
		if err := l.readFile(); err != nil {
			return fmt.Errorf("allowlist: %w", err)
		}
	}
	if len(l.allowed) == 0 {
		return errors.New("allowlist: no peer IDs: list some inline or in a file (a super peer that admits no one is better stopped)")
	}
	return nil
}

func (l *Allowlist) readFile() error {
	f, err := os.Open(l.File)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAllowlistFile+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", l.File, err)
	}
	if len(b) > maxAllowlistFile {
		return fmt.Errorf("%s is over %d bytes", l.File, maxAllowlistFile)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, err := identity.ParsePeerID(line)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", l.File, n, err)
		}
		l.allowed[p] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", l.File, err)
	}
	return nil
}

// Admit admits a listed device.
func (l *Allowlist) Admit(_ context.Context, req rendezvous.AdmissionRequest) error {
	if _, ok := l.allowed[req.Peer]; !ok {
		return fmt.Errorf("peer ID %s is not on this super peer's allowlist; ask its operator to add it", req.Peer)
	}
	return nil
}

// admissionState is the listed peer IDs, hashed: a reload that re-reads
// a changed file changes it.
func (l *Allowlist) admissionState() string {
	ids := make([]string, 0, len(l.allowed))
	for p := range l.allowed {
		ids = append(ids, p.String())
	}
	slices.Sort(ids)
	h := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return hex.EncodeToString(h[:])
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	allowlist [<peer_id>...] {
//		peer <peer_id>...
//		file <path>
//	}
func (l *Allowlist) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	l.Peers = append(l.Peers, d.RemainingArgs()...)
	return eachOption(d, func(opt string) error {
		switch opt {
		case "peer":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			l.Peers = append(l.Peers, args...)
		case "file":
			if !d.AllArgs(&l.File) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown allowlist option %q", opt)
		}
		return nil
	})
}

// ProofOfWork admits a device whose identity carries Netsody's proof of
// work (identity.CheckProofOfWork) of at least Difficulty bits: an
// identity then costs about 2^Difficulty hashes to make.
type ProofOfWork struct {
	// Difficulty is the leading zero bits required, 1 to 32.
	// Default: identity.DefaultProofOfWorkBits (24).
	Difficulty int `json:"difficulty,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*ProofOfWork) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "netsody.admission.pow", New: func() caddy.Module { return new(ProofOfWork) }}
}

// Provision sets the default difficulty.
func (p *ProofOfWork) Provision(caddy.Context) error {
	if p.Difficulty == 0 {
		p.Difficulty = identity.DefaultProofOfWorkBits
	}
	return nil
}

// Validate checks the difficulty.
func (p *ProofOfWork) Validate() error {
	if p.Difficulty < 1 || p.Difficulty > identity.MaxProofOfWorkBits {
		return fmt.Errorf("pow: difficulty must be 1 to %d bits, got %d", identity.MaxProofOfWorkBits, p.Difficulty)
	}
	return nil
}

// Admit admits a device with enough proof of work.
func (p *ProofOfWork) Admit(_ context.Context, req rendezvous.AdmissionRequest) error {
	return identity.CheckProofOfWork(req.Peer, req.ProofOfWork, p.Difficulty)
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	pow [<bits>]
func (p *ProofOfWork) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 1 || n > identity.MaxProofOfWorkBits {
			return d.Errf("pow must be 1 to %d leading zero bits, got %q", identity.MaxProofOfWorkBits, args[0])
		}
		p.Difficulty = n
	default:
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Err("pow takes no block")
	}
	return nil
}

// Interface guards
var (
	_ Admitter              = (*AllowAll)(nil)
	_ Admitter              = (*Allowlist)(nil)
	_ Admitter              = (*ProofOfWork)(nil)
	_ caddy.Provisioner     = (*Allowlist)(nil)
	_ caddy.Provisioner     = (*ProofOfWork)(nil)
	_ caddy.Validator       = (*ProofOfWork)(nil)
	_ caddyfile.Unmarshaler = (*AllowAll)(nil)
	_ caddyfile.Unmarshaler = (*Allowlist)(nil)
	_ caddyfile.Unmarshaler = (*ProofOfWork)(nil)
)
