package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/gbc-farm/gbc/internal/s3test"
)

var bucketSeq atomic.Int64

// openS3 opens an S3Store on a new bucket of srv.
func openS3(t *testing.T, srv *s3test.Server, prefix string) *S3Store {
	t.Helper()
	bucket := srv.Bucket(t, fmt.Sprintf("gbc-cache-%d", bucketSeq.Add(1)))
	st, err := OpenStoreURL(context.Background(), srv.URL(bucket, prefix),
		Credentials{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st.(*S3Store)
}

func TestParseS3URL(t *testing.T) {
	cfg, err := ParseS3URL("s3://b/some/prefix?endpoint=127.0.0.1:8333&region=eu-1&scheme=http")
	if err != nil || cfg.Bucket != "b" || cfg.Prefix != "some/prefix" || cfg.Endpoint != "127.0.0.1:8333" || cfg.Region != "eu-1" || !cfg.Insecure {
		t.Fatalf("%+v %v", cfg, err)
	}
	for _, bad := range []string{"s3:///x", "s3://b/x?scheme=ftp", "s3://b/x?endpoint=h&bogus=1", "s3://u:p@b/x", "s3://b/a/../c", "http://b/x"} {
		if _, err := ParseS3URL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := OpenStoreURL(context.Background(), "s3://b/x?endpoint=127.0.0.1:1&scheme=http", Credentials{}, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Fatalf("no credentials: %v", err)
	}
	if _, err := OpenStoreURL(context.Background(), "ftp://x", Credentials{}, "", nil); err == nil {
		t.Fatal("ftp:// accepted")
	}
}

// The Store contract on a real S3 server, at the bucket's root and under a
// prefix.
func TestS3Store(t *testing.T) {
	srv := s3test.Start(t)
	for _, prefix := range []string{"", "farm/cache"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			testStore(t, openS3(t, srv, prefix))
		})
	}
	// A missing bucket is refused at open, not at the first publish.
	_, err := OpenStoreURL(context.Background(), srv.URL("no-such-bucket", ""),
		Credentials{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket: %v", err)
	}
	// Wrong keys are refused.
	bucket := srv.Bucket(t, "gbc-cache-keys")
	_, err = OpenStoreURL(context.Background(), srv.URL(bucket, ""),
		Credentials{AccessKey: s3test.AccessKey, SecretKey: "wrong"}, t.TempDir(), nil)
	if err == nil {
		t.Fatal("wrong secret key accepted")
	}
}

// A cache on a bucket: publishing an agent's upload, a .drv closure batch,
// an import and a log; serving all of it through the handler with Range;
// the same objects in the bucket as in a file: cache; and real Nix
// substituting from the bucket's own HTTP endpoint with signatures
// required.
func TestCacheOnS3(t *testing.T) {
	drv, out, closure := sample(t, "s3")
	srv := s3test.Start(t)
	ctx := context.Background()
	st := openS3(t, srv, "nix")
	key := newKey(t, "gbc-test-1")
	c, err := OpenStore(ctx, st, Options{NixKey: key})
	if err != nil {
		t.Fatal(err)
	}
	publishClosure(t, c, drv, out, closure)
	bad, err := c.PublishDerivationClosures(ctx, []string{drv}, "")
	if err != nil || len(bad) != 0 {
		t.Fatal(bad, err)
	}
	if _, err := c.ReadDerivation(ctx, drv); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteLog(ctx, drv, strings.NewReader("building s3\n")); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(closure, drv) {
		if !c.Has(p) {
			t.Fatalf("%s not in the bucket cache", p)
		}
	}

	// The same layout as a file: cache of the same paths.
	fc := openCache(t, t.TempDir(), Options{NixKey: key})
	publishClosure(t, fc, drv, out, closure)
	if _, err := fc.PublishDerivationClosures(ctx, []string{drv}, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(closure, drv) {
		sp, _ := c.parsePath(p)
		a, err1 := readSmall(ctx, st, narinfoKey(sp.HashPart), maxNarinfoSize)
		b, err2 := os.ReadFile(fc.narinfoPath(sp.HashPart))
		if err1 != nil || err2 != nil || string(a) != string(b) {
			t.Fatalf("%s: bucket narinfo differs from the directory's (%v, %v)\n%s\n%s", p, err1, err2, a, b)
		}
	}
	// Objects are under the prefix; nothing else is in the bucket.
	for oi := range st.Client().ListObjects(ctx, st.Bucket(), minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if !strings.HasPrefix(oi.Key, "nix/") {
			t.Fatalf("object %s outside the prefix", oi.Key)
		}
	}

	// The coordinator's handler serves from the bucket, with Range.
	url := serve(t, c)
	ni, err := c.Lookup(out)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", url+"/"+ni.URL, nil)
	req.Header.Set("Range", "bytes=4-11")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	whole, err := readSmall(ctx, st, ni.URL, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(whole[4:12]) {
		t.Fatalf("range: %s %q, want %q", resp.Status, part, whole[4:12])
	}
	req, _ = http.NewRequest("GET", url+"/log/"+filepath.Base(drv), nil)
	req.Header.Set("Accept-Encoding", "zstd")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "zstd" {
		t.Fatalf("log: %s %v", resp.Status, resp.Header)
	}

	// Real Nix from the coordinator's handler and from the bucket's own
	// endpoint (anonymous reads), signatures required.
	for name, from := range map[string]string{
		"handler": url,
		"bucket":  "http://" + srv.Endpoint + "/" + st.Bucket() + "/nix",
	} {
		root := filepath.Join(t.TempDir(), "root-"+name)
		if msg, err := nixCopy(t, from, root, c.PublicKey(), out); err != nil {
			t.Fatalf("nix copy from %s (%s) failed: %v\n%s", name, from, err, msg)
		}
		env := nixEnv(t)
		if got, want := run(t, env, "nix-store", "--store", "local?root="+root, "-q", "--hash", out), run(t, env, "nix-store", "-q", "--hash", out); got != want {
			t.Fatalf("%s: substituted NarHash %s, want %s", name, got, want)
		}
	}
	// With another trusted key, Nix refuses the bucket's narinfos.
	other := newKey(t, "other-1")
	if msg, err := nixCopy(t, "http://"+srv.Endpoint+"/"+st.Bucket()+"/nix", filepath.Join(t.TempDir(), "root-other"), other.Public(), out); err == nil {
		t.Fatalf("nix accepted narinfos signed by an untrusted key:\n%s", msg)
	}
}

// The object store restarted under an open cache: what was published is
// still there, and publishing works again once it is back.
func TestCacheOnS3SurvivesStoreRestart(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	bucket := srv.Bucket(t, "gbc-cache-restart")
	cfg, err := ParseS3URL(srv.URL(bucket, ""))
	if err != nil {
		t.Fatal(err)
	}
	// Few retries: the requests made while the store is down fail fast.
	cfg.AccessKey, cfg.SecretKey, cfg.SpoolDir, cfg.MaxRetries = s3test.AccessKey, s3test.SecretKey, t.TempDir(), 2
	st, err := OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := OpenStore(ctx, st, Options{NixKey: newKey(t, "gbc-test-1")})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := os.ReadFile("testdata/multi-closure.export")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := c.Import(ctx, strings.NewReader(string(stream)))
	if err != nil || len(paths) == 0 {
		t.Fatal(paths, err)
	}
	srv.Stop()
	if c.Has(paths[0]) {
		t.Fatal("Has answered true with the object store down")
	}
	if _, err := c.Import(ctx, strings.NewReader(string(stream))); err == nil {
		t.Fatal("import succeeded with the object store down")
	}
	srv.Restarted(t)
	for _, p := range paths {
		if _, err := c.Lookup(p); err != nil {
			t.Fatalf("after restart: %v", err)
		}
	}
	if again, err := c.Import(ctx, strings.NewReader(string(stream))); err != nil || len(again) != len(paths) {
		t.Fatal(again, err)
	}
	// Nothing was left spooled.
	ents, _ := os.ReadDir(st.cfg.SpoolDir)
	if len(ents) != 0 {
		t.Fatalf("spool dir holds %d files", len(ents))
	}
}

// A collection on a bucket: Scan lists the narinfos, the narinfo goes
// before its NAR, Files lists what is left for orphan reaping.
func TestCollectionOnS3(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	c, err := OpenStore(ctx, openS3(t, srv, "gc"), Options{NixKey: newKey(t, "gbc-test-1")})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, c, pathA, "a\n")
	e := publish(t, c, pathB, "b\n", pathA)
	n := 0
	if _, err := c.Scan(ctx, func(s Stored) error {
		n++
		if s.Published.IsZero() || s.URL == "" {
			t.Errorf("scanned %+v", s)
		}
		return nil
	}); err != nil || n != 2 {
		t.Fatalf("scan: %d narinfos, %v", n, err)
	}
	x, err := c.BeginCollection()
	if err != nil {
		t.Fatal(err)
	}
	defer x.End()
	x.Touched()
	done, err := x.DeleteNarinfos(ctx, []string{filepath.Base(pathB)})
	if err != nil || len(done) != 1 || c.Has(pathB) || !c.Has(pathA) {
		t.Fatalf("DeleteNarinfos: %v %v", done, err)
	}
	url := narURL(e.FileHash, e.Compression)
	if _, err := c.store.Stat(ctx, url); err != nil {
		t.Fatalf("NAR went with the narinfo: %v", err)
	}
	x.Touched() // Has above touched both hash parts
	if ok, err := x.DeleteNar(url); !ok || err != nil {
		t.Fatalf("DeleteNar: %v %v", ok, err)
	}
	if _, err := c.store.Stat(ctx, url); !isNotExist(err) {
		t.Fatalf("NAR still there: %v", err)
	}
	var files []string
	if err := c.Files(ctx, func(f File) error { files = append(files, f.Name); return nil }); err != nil || len(files) != 1 {
		t.Fatalf("files: %q %v", files, err)
	}
}
