package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

const (
	pathA = "/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple"
	pathB = "/nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi"
)

// fakeUpload writes a NAR of a one-file tree and returns its entry.
func fakeUpload(t *testing.T, content string) (Entry, string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "upload")
	return compressNar(t, src, "zstd", file), file
}

func TestPublishLookupIdempotentConflict(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, t.TempDir(), Options{})
	info, _ := os.ReadFile(filepath.Join(c.Dir(), "nix-cache-info"))
	if string(info) != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" {
		t.Fatalf("nix-cache-info %q", info)
	}
	e, file := fakeUpload(t, "first\n")
	e.StorePath, e.References, e.Deriver = pathB, []string{pathA, pathB}, "/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"
	if c.Has(pathB) {
		t.Fatal("Has before Publish")
	}
	if _, err := c.Lookup(pathB); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup before Publish: %v", err)
	}
	if err := c.Publish(ctx, e, file); err != nil {
		t.Fatal(err)
	}
	ni, err := c.Lookup(pathB)
	if err != nil {
		t.Fatal(err)
	}
	if err := ni.VerifyNix([]signing.NixPublicKey{c.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ni.References, " "); got != filepath.Base(pathA)+" "+filepath.Base(pathB) {
		t.Fatalf("references %q", got)
	}
	if ni.Deriver != "0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv" || ni.Compression != "zstd" || !ni.FileHash.Equal(e.FileHash) {
		t.Fatalf("narinfo %+v", ni)
	}
	if st, err := os.Stat(filepath.Join(c.Dir(), ni.URL)); err != nil || st.Size() != e.FileSize {
		t.Fatalf("NAR file: %v", err)
	}

	// Same path, same NarHash: accepted, the new upload is consumed.
	e2, file2 := fakeUpload(t, "first\n")
	e2.StorePath = pathB
	if err := c.Publish(ctx, e2, file2); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if _, err := os.Stat(file2); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("republish left the upload")
	}
	// Different NarHash: a conflict, first wins, the upload stays for QA.
	e3, file3 := fakeUpload(t, "second\n")
	e3.StorePath = pathB
	err = c.Publish(ctx, e3, file3)
	var ce *ConflictError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) || !ce.Have.Equal(e.NarHash) || !ce.Got.Equal(e3.NarHash) {
		t.Fatalf("conflict: %v", err)
	}
	if _, err := os.Stat(file3); err != nil {
		t.Fatalf("conflicting upload removed: %v", err)
	}
	if ni2, _ := c.Lookup(pathB); !ni2.NarHash.Equal(e.NarHash) {
		t.Fatal("first publication did not win")
	}
}

func TestPublishRejectsBadEntriesWithoutNarinfo(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, t.TempDir(), Options{})
	good, _ := fakeUpload(t, "x")
	good.StorePath = pathA
	cases := map[string]func(e *Entry){
		"other store":    func(e *Entry) { e.StorePath = "/gnu/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple" },
		"bad path":       func(e *Entry) { e.StorePath = "/nix/store/short-x" },
		"bad reference":  func(e *Entry) { e.References = []string{"/nix/store/../etc"} },
		"deriver no drv": func(e *Entry) { e.Deriver = pathB },
		"no narhash":     func(e *Entry) { e.NarHash = nixhash.Hash{} },
		"size mismatch":  func(e *Entry) { e.FileSize++ },
		"compression":    func(e *Entry) { e.Compression = "lolz" },
		"ca newline":     func(e *Entry) { e.CA = "text:sha256:x\nSig: y" },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			e, file := fakeUpload(t, "x")
			e.StorePath = pathA
			mod(&e)
			if err := c.Publish(ctx, e, file); err == nil {
				t.Fatal("accepted")
			}
			if c.Has(pathA) {
				t.Fatal("narinfo written for a refused entry")
			}
			if _, err := os.Stat(file); err != nil {
				t.Fatalf("refused upload removed: %v", err)
			}
		})
	}
	if err := c.Publish(ctx, good, filepath.Join(t.TempDir(), "missing")); err == nil || c.Has(pathA) {
		t.Fatalf("missing file: %v", err)
	}
}

// An upload on another filesystem (tmpfs here) is copied, synced and
// renamed instead of moved.
func TestPublishAcrossFilesystems(t *testing.T) {
	var a, b syscall.Stat_t
	if syscall.Stat("/dev/shm", &a) != nil || syscall.Stat(t.TempDir(), &b) != nil || a.Dev == b.Dev {
		t.Skip("no second filesystem")
	}
	c := openCache(t, t.TempDir(), Options{})
	e, file := fakeUpload(t, "across")
	shm, err := os.CreateTemp("/dev/shm", "gbc-cache-test-")
	if err != nil {
		t.Skip(err)
	}
	defer os.Remove(shm.Name())
	data, _ := os.ReadFile(file)
	shm.Write(data)
	shm.Close()
	e.StorePath = pathA
	if err := c.Publish(context.Background(), e, shm.Name()); err != nil {
		t.Fatal(err)
	}
	ni, _ := c.Lookup(pathA)
	got, _ := os.ReadFile(filepath.Join(c.Dir(), ni.URL))
	if !bytes.Equal(got, data) {
		t.Fatal("copied NAR differs")
	}
	if _, err := os.Stat(shm.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("source not removed after copy")
	}
}

// For /gnu/store one narinfo carries both signatures: Guix's over the part
// before Signature:, Nix's over the fingerprint.
func TestGuixFlavour(t *testing.T) {
	gk, err := signing.GenerateGuixKey()
	if err != nil {
		t.Fatal(err)
	}
	c := openCache(t, t.TempDir(), Options{StoreDir: "/gnu/store", GuixKey: &gk, GuixHostname: "gbc.test"})
	e, file := fakeUpload(t, "guix")
	e.StorePath = "/gnu/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple"
	e.References = []string{"/gnu/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi"}
	e.Deriver = "/gnu/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"
	if err := c.Publish(context.Background(), e, file); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(c.Dir(), "ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("narinfo:\n%s", raw)
	if err := narinfo.VerifyGuix(raw, signing.NewACL(gk.Public())); err != nil {
		t.Fatalf("VerifyGuix: %v", err)
	}
	other, _ := signing.GenerateGuixKey()
	if err := narinfo.VerifyGuix(raw, signing.NewACL(other.Public())); err == nil {
		t.Fatal("VerifyGuix accepted a key not in the ACL")
	}
	ni, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := ni.VerifyNix([]signing.NixPublicKey{c.PublicKey()}); err != nil {
		t.Fatalf("VerifyNix: %v", err)
	}
	if ni.URL == "" || ni.Compression != "zstd" || ni.FileHash.IsZero() || !strings.HasPrefix(string(ni.SignedBody), "StorePath: ") {
		t.Fatalf("parsed %+v", ni)
	}
	if bytes.Contains(ni.SignedBody, []byte("URL:")) {
		t.Fatal("NAR group inside the Guix-signed part")
	}
	// Tampering with the signed part breaks the Guix signature.
	bad := bytes.Replace(raw, []byte("NarSize: "), []byte("NarSize: 1"), 1)
	if err := narinfo.VerifyGuix(bad, signing.NewACL(gk.Public())); err == nil {
		t.Fatal("tampered narinfo verified")
	}
}

func TestLoadOrCreateKeys(t *testing.T) {
	state := t.TempDir()
	k1, err := LoadOrCreateKeys(state, "gbc-farm-1", "/nix/store", "")
	if err != nil {
		t.Fatal(err)
	}
	if k1.Guix != nil || k1.Nix.Name != "gbc-farm-1" {
		t.Fatalf("keys %+v", k1)
	}
	st, err := os.Stat(filepath.Join(state, NixSecretKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret key file: %v %v", st.Mode(), err)
	}
	pub, _ := os.ReadFile(filepath.Join(state, NixPublicKeyFile))
	if string(pub) != k1.Nix.Public().String() {
		t.Fatalf("pub file %q", pub)
	}
	if _, err := signing.ParseNixPublicKey(string(pub)); err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKeys(state, "ignored-name", "/gnu/store", "")
	if err != nil {
		t.Fatal(err)
	}
	if k2.Nix.String() != k1.Nix.String() {
		t.Fatal("second start generated a new Nix key")
	}
	if k2.Guix == nil {
		t.Fatal("no Guix key for /gnu/store")
	}
	gpub, _ := os.ReadFile(filepath.Join(state, GuixPublicKeyFile))
	if p, err := signing.ParseGuixPublicKey(gpub); err != nil || !p.Equal(k2.Guix.Public()) {
		t.Fatalf("guix pub: %v", err)
	}
	k3, _ := LoadOrCreateKeys(state, "", "/gnu/store", "")
	if !bytes.Equal(k3.Guix.Q, k2.Guix.Q) {
		t.Fatal("Guix key regenerated")
	}
	given := filepath.Join(t.TempDir(), "given.sec")
	gk := newKey(t, "given-1")
	os.WriteFile(given, []byte(gk.String()+"\n"), 0o600)
	k4, err := LoadOrCreateKeys(t.TempDir(), "", "/nix/store", given)
	if err != nil || k4.Nix.String() != gk.String() {
		t.Fatalf("given key: %v", err)
	}
	os.WriteFile(given, []byte("garbage"), 0o600)
	if _, err := LoadOrCreateKeys(t.TempDir(), "", "/nix/store", given); err == nil {
		t.Fatal("garbage key accepted")
	}
}

func TestWriteLogTruncates(t *testing.T) {
	c := openCache(t, t.TempDir(), Options{MaxLogSize: 100})
	drv := "/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"
	if err := c.WriteLog(context.Background(), drv, strings.NewReader(strings.Repeat("x", 1000))); err != nil {
		t.Fatal(err)
	}
	got := readLog(t, c, drv)
	if !strings.HasPrefix(got, strings.Repeat("x", 100)+"\n[gbc: log truncated at 100 bytes]") {
		t.Fatalf("log %q", got)
	}
	if err := c.WriteLog(context.Background(), drv, strings.NewReader(strings.Repeat("y", 100))); err != nil {
		t.Fatal(err)
	}
	if got := readLog(t, c, drv); got != strings.Repeat("y", 100) {
		t.Fatalf("exact-size log %q", got)
	}
	if err := c.WriteLog(context.Background(), pathA, strings.NewReader("x")); err == nil {
		t.Fatal("log for a non-drv path accepted")
	}
}

// The same check with the libgcrypt-generated key and ACL from the Guix
// vectors, as a Guix client's /etc/guix/acl would hold it. (No Guix is
// installed here; this is the vectors' verification logic, not guix itself.)
func TestGuixFlavourLibgcryptKey(t *testing.T) {
	b, err := os.ReadFile("testdata/guix-libgcrypt-signing-key.sec")
	if err != nil {
		t.Fatal(err)
	}
	gk, err := signing.ParseGuixSecretKey(b)
	if err != nil {
		t.Fatal(err)
	}
	aclText, _ := os.ReadFile("testdata/guix-libgcrypt.acl")
	acl, err := signing.ParseACL(aclText)
	if err != nil {
		t.Fatal(err)
	}
	c := openCache(t, t.TempDir(), Options{StoreDir: "/gnu/store", GuixKey: &gk})
	e, file := fakeUpload(t, "guix libgcrypt")
	e.StorePath = "/gnu/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi"
	if err := c.Publish(context.Background(), e, file); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(c.Dir(), "c1vkj2mccblk74zz1fzah0m1rjmc47nw.narinfo"))
	if err := narinfo.VerifyGuix(raw, acl); err != nil {
		t.Fatal(err)
	}
}

// Racing publishers of one path: exactly one NarHash wins, everyone with
// that hash succeeds, everyone else gets a conflict.
func TestPublishConcurrent(t *testing.T) {
	c := openCache(t, t.TempDir(), Options{})
	type up struct {
		e    Entry
		file string
	}
	var ups []up
	for i := range 8 {
		e, f := fakeUpload(t, []string{"red", "blue"}[i%2])
		e.StorePath = pathA
		ups = append(ups, up{e, f})
	}
	errs := make([]error, len(ups))
	var wg sync.WaitGroup
	for i, u := range ups {
		wg.Go(func() { errs[i] = c.Publish(context.Background(), u.e, u.file) })
	}
	wg.Wait()
	ni, err := c.Lookup(pathA)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range ups {
		won := u.e.NarHash.Equal(ni.NarHash)
		if won != (errs[i] == nil) || (!won && !errors.Is(errs[i], ErrConflict)) {
			t.Errorf("publisher %d: won=%v err=%v", i, won, errs[i])
		}
	}
}

// A crash leaves temp files in the cache's directories and in spool's;
// the next Open removes them and nothing else.
func TestOpenRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, Options{})
	key := c.opts.NixKey
	stale := []string{
		filepath.Join(dir, tmpPrefix+"123"),
		filepath.Join(dir, "nar", tmpPrefix+"nar-456"),
		filepath.Join(c.spoolDirs[3], tmpPrefix+"789"),
	}
	keep := filepath.Join(dir, "nar", "keep.nar.zst")
	for _, p := range append(stale, keep) {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c = openCache(t, dir, Options{NixKey: key})
	if left := tempFiles(t, c); len(left) > 0 {
		t.Fatalf("temp files left after Open: %q", left)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("Open removed a file that is not a temp: %v", err)
	}
	for _, d := range c.spoolDirs {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("spool dir %s: %v", d, err)
		}
	}
}
