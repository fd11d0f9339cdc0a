package base

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/meshsock/meshsock/protocol"
)

func TestLoadOrCreateKeyCreatesThenLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "node.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", info.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("second load returned a different key")
	}
	s := stNew(t, WithKey(k2))
	if s.ID() != protocol.NodeIDFromKey(k1.Public().(ed25519.PublicKey)) || !bytes.Equal(s.PublicKey(), k1.Public().(ed25519.PublicKey)) {
		t.Fatalf("socket ID %s does not derive from the loaded key", s.ID())
	}
	sig := s.Sign([]byte("hello"))
	if !ed25519.Verify(s.PublicKey(), []byte("hello"), sig) {
		t.Fatal("Sign's signature does not verify under PublicKey")
	}
}

func TestLoadOrCreateKeyConcurrentCreatorsAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	keys := make([]ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent LoadOrCreateKey calls returned different keys")
		}
	}
}

func TestLoadOrCreateKeyRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	if _, err := LoadOrCreateKey(good); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"world readable": {data, 0o644},
		"group readable": {data, 0o640},
		"not PEM":        {[]byte("hello"), 0o600},
		"wrong block":    {bytes.Replace(data, []byte("PRIVATE KEY"), []byte("CERTIFICATE"), 2), 0o600},
		"bad DER":        {[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // umask
				t.Fatal(err)
			}
			if _, err := LoadOrCreateKey(path); !errors.Is(err, ErrBadKeyFile) {
				t.Fatalf("err = %v, want ErrBadKeyFile", err)
			}
		})
	}
}

func TestFreshSocketsHaveDistinctKeyBoundIDs(t *testing.T) {
	a, b := stNew(t), stNew(t)
	if a.ID() == b.ID() {
		t.Fatal("two sockets share an ID")
	}
	for _, s := range []*Socket{a, b} {
		if !protocol.KeyMatchesID(s.PublicKey(), s.ID()) {
			t.Fatalf("ID %s is not derived from the public key", s.ID())
		}
	}
}
