package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateSaveLoad(t *testing.T) {
	id, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id.ini")
	if err := id.Save(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o, want 0600", st.Mode().Perm())
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.PrivateKey, id.PrivateKey) || got.PeerID() != id.PeerID() {
		t.Error("loaded identity differs from the saved one")
	}
	if err := id.Save(path); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second Save: err = %v, want refusal to overwrite", err)
	}
}

// A file in Netsody's format, as a Netsody agent writes it, loads unchanged.
func TestParseNetsodyFormat(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	file := "[Identity]\nSecretKey = " + hex.EncodeToString(priv) + "\nProofOfWork = -2147483648\n"
	id, err := Parse([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if id.ProofOfWork != -2147483648 {
		t.Errorf("ProofOfWork = %d", id.ProofOfWork)
	}
	if want := hex.EncodeToString(priv[32:]); id.PeerID().String() != want {
		t.Errorf("PeerID = %s, want %s", id.PeerID(), want)
	}
	if string(id.Marshal()) != file {
		t.Errorf("Marshal = %q, want %q", id.Marshal(), file)
	}
}

func TestParseErrors(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	good := hex.EncodeToString(priv)
	bad := good[:64] + strings.Repeat("0", 64) // public half of another key
	for _, tc := range []struct{ name, file, want string }{
		{"empty", "", "no SecretKey"},
		{"no pow", "[Identity]\nSecretKey = " + good + "\n", "no ProofOfWork"},
		{"inconsistent", "[Identity]\nSecretKey = " + bad + "\nProofOfWork = 0\n", "inconsistent"},
		{"short key", "[Identity]\nSecretKey = abcd\nProofOfWork = 0\n", "128 hex digits"},
		{"not hex", "[Identity]\nSecretKey = " + strings.Repeat("zz", 64) + "\nProofOfWork = 0\n", "not hex"},
		{"pow overflow", "[Identity]\nSecretKey = " + good + "\nProofOfWork = 2147483648\n", "32-bit"},
		{"unknown key", "[Identity]\nSecretKey = " + good + "\nProofOfWork = 0\nColour = blue\n", "unknown key"},
		{"wrong section", "[Other]\nSecretKey = " + good + "\n", "unknown section"},
		{"no section", "SecretKey = " + good + "\n", "outside the [Identity] section"},
		{"no equals", "[Identity]\nSecretKey\n", "Key = value"},
		{"twice", "[Identity]\nProofOfWork = 0\nProofOfWork = 1\n", "given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	id, _ := Generate()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask may have narrowed it
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ name, path, want string }{
		{"world-readable", write("world", id.Marshal(), 0o644), "chmod 600"},
		{"group-readable", write("group", id.Marshal(), 0o640), "chmod 600"},
		{"inconsistent", write("bad", []byte("[Identity]\nSecretKey = "+hex.EncodeToString(id.PrivateKey[:32])+strings.Repeat("ab", 32)+"\nProofOfWork = 0\n"), 0o600), "inconsistent"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"directory", dir, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestPeerID(t *testing.T) {
	id, _ := Generate()
	s := id.PeerID().String()
	if s != strings.ToLower(s) || len(s) != 64 {
		t.Fatalf("String = %q", s)
	}
	for _, in := range []string{s, strings.ToUpper(s)} {
		p, err := ParsePeerID(in)
		if err != nil || p != id.PeerID() {
			t.Errorf("ParsePeerID(%q) = %v, %v", in, p, err)
		}
	}
	for _, in := range []string{"", s[:63], s + "0", "g" + s[1:]} {
		if _, err := ParsePeerID(in); err == nil {
			t.Errorf("ParsePeerID(%q) accepted", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	id, _ := Generate()
	f.Add(id.Marshal())
	f.Add([]byte("[Identity]\nSecretKey = \"" + hex.EncodeToString(id.PrivateKey) + "\"\nProofOfWork = 12\n"))
	f.Add([]byte("[Identity\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must round-trip and be a usable key pair.
		again, err := Parse(got.Marshal())
		if err != nil || !bytes.Equal(again.PrivateKey, got.PrivateKey) || again.ProofOfWork != got.ProofOfWork {
			t.Fatalf("round trip failed: %v", err)
		}
		msg := []byte("m")
		if !ed25519.Verify(got.PeerID().PublicKey(), msg, got.Sign(msg)) {
			t.Fatal("parsed key does not verify its own signature")
		}
	})
}

func FuzzParsePeerID(f *testing.F) {
	id, _ := Generate()
	f.Add(id.PeerID().String())
	f.Add(strings.Repeat("ab", 32))
	f.Add("01" + strings.Repeat("00", 31))        // small order
	f.Add("ee" + strings.Repeat("ff", 30) + "7f") // non-canonical
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeerID(s)
		if b, herr := hex.DecodeString(s); herr == nil {
			// The text and the binary form take the same keys.
			q, berr := PeerIDFromBytes(b)
			if (err == nil) != (berr == nil) || err == nil && p != q {
				t.Fatalf("ParsePeerID %v, PeerIDFromBytes %v", err, berr)
			}
		}
		if err != nil {
			return
		}
		if !strings.EqualFold(p.String(), s) {
			t.Fatalf("round trip %q -> %q", s, p)
		}
		if p.Validate() != nil || p.IsZero() {
			t.Fatalf("ParsePeerID took %s, which Validate refuses", p)
		}
	})
}
