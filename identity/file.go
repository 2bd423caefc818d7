package identity

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// The identity file format (Netsody's):
//
//	[Identity]
//	SecretKey = <128 lowercase hex digits>
//	ProofOfWork = <signed 32-bit decimal>
//
// Blank lines and lines starting with '#' or ';' are ignored; values may be
// quoted. Keys are case-sensitive, as Netsody writes them. Any other section
// or key is an error, so that a typo is not silently ignored.
const (
	fileSection        = "Identity"
	keySecretKey       = "SecretKey"
	keyProofOfWork     = "ProofOfWork"
	maxFileSize        = 64 << 10 // bytes; an identity file is about 200
	fileMode           = 0o600
	forbiddenFileModes = 0o077 // no access at all for group and others
)

// Parse decodes an identity file's contents and checks that the key pair is
// consistent.
func Parse(data []byte) (*Identity, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("identity: file is %d bytes, larger than the %d allowed", len(data), maxFileSize)
	}
	var (
		id               Identity
		section          string
		haveKey, havePoW bool
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("identity: line %d: unterminated section header %q", n, line)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			if section != fileSection {
				return nil, fmt.Errorf("identity: line %d: unknown section [%s], want [%s]", n, section, fileSection)
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("identity: line %d: want 'Key = value'", n)
		}
		if section != fileSection {
			return nil, fmt.Errorf("identity: line %d: %q outside the [%s] section", n, strings.TrimSpace(key), fileSection)
		}
		key, value = strings.TrimSpace(key), unquote(strings.TrimSpace(value))
		switch key {
		case keySecretKey:
			if haveKey {
				return nil, fmt.Errorf("identity: line %d: %s given twice", n, keySecretKey)
			}
			if len(value) != 2*64 {
				return nil, fmt.Errorf("identity: line %d: %s must be 128 hex digits, got %d characters", n, keySecretKey, len(value))
			}
			b, err := hex.DecodeString(value)
			if err != nil {
				return nil, fmt.Errorf("identity: line %d: %s is not hex: %w", n, keySecretKey, err)
			}
			id.PrivateKey, haveKey = b, true
		case keyProofOfWork:
			if havePoW {
				return nil, fmt.Errorf("identity: line %d: %s given twice", n, keyProofOfWork)
			}
			v, err := strconv.ParseInt(value, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("identity: line %d: %s must be a signed 32-bit decimal number: %w", n, keyProofOfWork, err)
			}
			id.ProofOfWork, havePoW = int32(v), true
		default:
			return nil, fmt.Errorf("identity: line %d: unknown key %q", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("identity: reading: %w", err)
	}
	if !haveKey {
		return nil, fmt.Errorf("identity: no %s in the [%s] section", keySecretKey, fileSection)
	}
	if !havePoW {
		return nil, fmt.Errorf("identity: no %s in the [%s] section (a new identity may carry 0)", keyProofOfWork, fileSection)
	}
	if err := id.check(); err != nil {
		return nil, err
	}
	return &id, nil
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// Marshal encodes the identity in Netsody's file format.
func (id *Identity) Marshal() []byte {
	return fmt.Appendf(nil, "[%s]\n%s = %s\n%s = %d\n",
		fileSection, keySecretKey, hex.EncodeToString(id.PrivateKey), keyProofOfWork, id.ProofOfWork)
}

// Load reads an identity file. It refuses a file that group or others may
// access, and says how to fix it.
func Load(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&forbiddenFileModes != 0 {
		return nil, fmt.Errorf("identity: %s has mode %04o, so others may read the secret key; run 'chmod 600 %s'", path, perm, path)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("identity: %s is %d bytes, larger than the %d allowed", path, st.Size(), maxFileSize)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("identity: reading %s: %w", path, err)
	}
	id, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return id, nil
}

// Save writes the identity to a new file with mode 0600. It never
// overwrites an existing file: losing a key loses the peer ID.
func (id *Identity) Save(path string) error {
	if err := id.check(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("identity: %s already exists; refusing to overwrite an identity", path)
		}
		return fmt.Errorf("identity: %w", err)
	}
	if _, err := f.Write(id.Marshal()); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("identity: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("identity: writing %s: %w", path, err)
	}
	return nil
}
