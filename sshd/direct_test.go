package sshd

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/s3test"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

// TestDirectUpload runs --cache-direct-upload against a real SeaweedFS
// bucket through the agent protocol: URLs only for a build the agent
// holds and names its outputs upload as, a URL that writes nothing but
// its own key, an object that matches its report published (a server-side
// copy to its nar/ key, the temp objects gone), one that does not — or is
// missing — refused as a verification failure with its temp objects
// deleted and no narinfo, and what was PUT for a build released without
// success deleted.
func TestDirectUpload(t *testing.T) {
	weed := s3test.Start(t)
	bucket := weed.Bucket(t, "gbc-direct")
	ctx := context.Background()
	st, err := cache.OpenS3(ctx, cache.S3Config{
		Bucket: bucket, Prefix: "farm", Endpoint: weed.Endpoint, Region: s3test.Region, Insecure: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, SpoolDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	nk, err := signing.GenerateNixKey("direct-test-1")
	if err != nil {
		t.Fatal(err)
	}
	var bc *cache.Cache
	e := newEnvCoord(t, func(dir string, c *coordinator.Config) {
		bc, err = cache.OpenStore(ctx, st, cache.Options{StoreDir: filepath.Join(dir, "store"), NixKey: nk})
		if err != nil {
			t.Fatal(err)
		}
		c.Cache, c.DirectUploads = bc, cache.NewDirectUploads(st, 0)
	}, func(c *Config) { c.MaxUploadBytes = 1 << 20 })
	cli := weed.Client(t)
	objects := func(prefix string) []string {
		t.Helper()
		var keys []string
		for oi := range cli.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "farm/" + prefix, Recursive: true}) {
			if oi.Err != nil {
				t.Fatal(oi.Err)
			}
			keys = append(keys, oi.Key)
		}
		return keys
	}
	put := func(url string, body []byte) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	idA, keyA := e.newAgent()
	_, keyB := e.newAgent()
	a, b := e.allocateDrv(keyA, e.realDrv("d1"))
	_, bB := e.allocateDrv(keyB, e.realDrv("d2"))
	id := uint64(100)
	var pushed []*protocol.Build
	// again waits for the build to be pushed to a again after a requeue.
	again := func(build string) *protocol.Build {
		t.Helper()
		for {
			for i, pb := range pushed {
				if pb.Build == build {
					pushed = append(pushed[:i], pushed[i+1:]...)
					return pb
				}
			}
			if pb, ok := a.read().(*protocol.Build); ok {
				pushed = append(pushed, pb)
			}
		}
	}
	ask := func(build, upload string, size int64) protocol.Message {
		t.Helper()
		id++
		a.send(&protocol.UploadURL{Header: protocol.Header{ID: id}, Build: build, Upload: upload, Size: size})
		for {
			m := a.read()
			if pb, ok := m.(*protocol.Build); ok {
				pushed = append(pushed, pb) // a requeued build pushed again
				continue
			}
			if protocol.IDOf(m) != id {
				t.Fatalf("got %T %+v, want the answer to %d", m, m, id)
			}
			return m
		}
	}
	refused := func(m protocol.Message, contains string) {
		t.Helper()
		if ut, ok := m.(*protocol.UploadTarget); !ok || ut.URL != "" || ut.Direct != "" || !strings.Contains(ut.Refused, contains) {
			t.Fatalf("got %T %+v, want an upload target refused with %q", m, m, contains)
		}
	}
	// Only for a build this agent holds, by its outputs' upload names,
	// within one PUT.
	refused(ask(bB.Build, "out.nar.zst", 10), "not allocated to this agent")
	refused(ask("no-such-build", "out.nar.zst", 10), "not allocated to this agent")
	refused(ask(b.Build, "evil.nar.zst", 10), "not an upload name")
	refused(ask(b.Build, "out.nar.zst", protocol.MaxDirectUpload+1), "direct upload takes")

	target := func(m protocol.Message) *protocol.UploadTarget {
		t.Helper()
		tg, ok := m.(*protocol.UploadTarget)
		if !ok || tg.Build != b.Build || tg.Upload != "out.nar.zst" || tg.Direct == "" || tg.ExpiresSeconds <= 0 {
			t.Fatalf("got %T %+v, want an upload target for %s", m, m, b.Build)
		}
		if !strings.Contains(tg.URL, "/"+bucket+"/farm/_gbc-uploads/direct/"+idA+"/"+b.Build+"/"+tg.Direct+"?") {
			t.Fatalf("URL %s is not for the agent's own temp key", tg.URL)
		}
		return tg
	}
	succeed := func(o protocol.OutputResult) protocol.Message {
		t.Helper()
		id++
		a.send(&protocol.Succeeded{Header: protocol.Header{ID: id}, Build: b.Build, Outputs: []protocol.OutputResult{o}})
		for {
			m := a.read()
			if pb, ok := m.(*protocol.Build); ok {
				pushed = append(pushed, pb)
				continue
			}
			if protocol.IDOf(m) != id {
				t.Fatalf("got %T %+v, want the answer to %d", m, m, id)
			}
			return m
		}
	}
	path := b.Outputs[0].Path
	hashPart := func(p string) string {
		sp, err := storepath.Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		return sp.HashPart
	}
	verificationFailed := func(build string, n int) {
		t.Helper()
		got, err := e.store.Build(ctx, build)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == db.StateSucceeded || len(got.Attempts) < n || got.Attempts[n-1].Outcome != db.OutcomeRequeued || !strings.Contains(got.Attempts[n-1].Reason, "verification") {
			t.Fatalf("build %s: %s, attempts %+v", build, got.State, got.Attempts)
		}
	}
	noTraces := func() {
		t.Helper()
		if left := objects("_gbc-uploads/"); len(left) != 0 {
			t.Fatalf("temp objects left: %v", left)
		}
		if _, err := st.Stat(ctx, hashPart(path)+".narinfo"); err == nil {
			t.Fatal("a narinfo was written for a refused upload")
		}
	}

	// Bytes that are not those reported: refused, nothing left.
	file, res, err := testagent.Output(b.Outputs[0], "the reported output")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := testagent.Output(b.Outputs[0], "other bytes entirely")
	if err != nil {
		t.Fatal(err)
	}
	tg := target(ask(b.Build, res.Upload, res.FileSize))
	// The URL writes its key and nothing else.
	forged := strings.Replace(tg.URL, "/"+tg.Direct+"?", "/"+strings.Repeat("0", 32)+"?", 1)
	if code := put(forged, file); code != http.StatusForbidden {
		t.Fatalf("PUT to another key with the URL: %d, want 403", code)
	}
	if code := put(tg.URL, other); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	res.Direct = tg.Direct
	if m := succeed(res); !isError(m, "NAR hash") {
		t.Fatalf("mismatched direct upload: %T %+v, want a verification error", m, m)
	}
	verificationFailed(b.Build, 1)
	noTraces()

	// The build comes back to this agent (the only one for it): a
	// token whose object was never PUT is refused the same way.
	b = again(b.Build)
	file, res, err = testagent.Output(b.Outputs[0], "the reported output")
	if err != nil {
		t.Fatal(err)
	}
	tg = target(ask(b.Build, res.Upload, res.FileSize))
	res.Direct = tg.Direct
	if m := succeed(res); !isError(m, "direct upload") {
		t.Fatalf("missing direct upload: %T %+v, want a verification error", m, m)
	}
	verificationFailed(b.Build, 2)
	noTraces()

	// A build released without success (here a setup failure) has what
	// its agent PUT deleted.
	b = again(b.Build)
	tg = target(ask(b.Build, res.Upload, res.FileSize))
	if code := put(tg.URL, file); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	if len(objects("_gbc-uploads/direct/")) != 1 {
		t.Fatalf("objects after the PUT: %v", objects("_gbc-uploads/"))
	}
	id++
	a.send(&protocol.SetupFailure{Header: protocol.Header{ID: id}, Build: b.Build, Reason: "gave up"})
	for deadline := time.Now().Add(30 * time.Second); len(objects("_gbc-uploads/")) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("temp objects of a released build left: %v", objects("_gbc-uploads/"))
		}
	}

	// The right bytes: verified from the bucket, published as the NAR
	// object, the temp objects gone.
	b = again(b.Build)
	tg = target(ask(b.Build, res.Upload, res.FileSize))
	if code := put(tg.URL, file); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	res.Direct = tg.Direct
	if m := succeed(res); protocol.IDOf(m) != id || m.MessageType() != protocol.TypeAck {
		t.Fatalf("direct upload: %T %+v, want an ack", m, m)
	}
	ni, err := bc.Lookup(path)
	if err != nil {
		t.Fatal(err)
	}
	if ni.FileSize != uint64(len(file)) || ni.URL != "nar/"+filepath.Base(ni.URL) {
		t.Fatalf("narinfo %+v", ni)
	}
	nar, err := st.Open(ctx, ni.URL)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	got.ReadFrom(nar)
	nar.Close()
	if !bytes.Equal(got.Bytes(), file) {
		t.Fatalf("NAR object %s: %d bytes, not the %d PUT", ni.URL, got.Len(), len(file))
	}
	if left := objects("_gbc-uploads/"); len(left) != 0 {
		t.Fatalf("temp objects left after publication: %v", left)
	}
	if b, err := e.store.Build(ctx, b.Build); err != nil || b.State != db.StateSucceeded {
		t.Fatalf("build: %+v %v", b.State, err)
	}
}

func isError(m protocol.Message, contains string) bool {
	er, ok := m.(*protocol.Error)
	return ok && strings.Contains(er.Message, contains)
}

// allocateDrv connects an agent and returns the build of drv pushed to it.
func (e *env) allocateDrv(key gossh.Signer, drv string) (*agentConn, *protocol.Build) {
	e.t.Helper()
	a := e.agentSession(key)
	a.hello()
	if r := e.run(e.operator, "build "+drv); r.code != 0 {
		e.t.Fatalf("build: %s", r.stderr)
	}
	b, ok := a.read().(*protocol.Build)
	if !ok {
		e.t.Fatal("no build pushed")
	}
	return a, b
}
