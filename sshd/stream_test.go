package sshd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/sftp"

	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/signing"
)

// newStreamingEnv is a server whose coordinator has a cache and streams
// uploads into it.
func newStreamingEnv(t *testing.T) (*env, *cache.Cache) {
	t.Helper()
	var cc *cache.Cache
	e := newEnvCoord(t, func(dir string, c *coordinator.Config) {
		nk, err := signing.GenerateNixKey("stream-test-1")
		if err != nil {
			t.Fatal(err)
		}
		cc, err = cache.Open(context.Background(), filepath.Join(dir, "state", "cache"), cache.Options{StoreDir: filepath.Join(dir, "store"), NixKey: nk})
		if err != nil {
			t.Fatal(err)
		}
		c.Cache, c.StreamUploads = cc, true
	}, func(c *Config) { c.MaxUploadBytes = 64 << 20 })
	return e, cc
}

// realDrv writes a derivation at the path its contents hash to, as a
// cache needs.
func (e *env) realDrv(name string) string {
	e.t.Helper()
	p, err := testagent.Derivation(e.storePath(name))
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// A streamed upload through the real SFTP server with the agent's own
// client (16 concurrent 252 KiB writes), cut short and resumed on a new
// SSH connection, verified at the report and published; nothing is
// written under the upload dir, and the tree shows the streamed file's
// size for the agent to resume from.
func TestStreamedUploadOverSFTP(t *testing.T) {
	e, cc := newStreamingEnv(t)
	id, key := e.newAgent()
	a := e.agentSession(key)
	a.hello()
	if r := e.run(e.operator, "build "+e.realDrv("streamed")); r.code != 0 {
		t.Fatalf("build: %s", r.stderr)
	}
	b, ok := a.read().(*protocol.Build)
	if !ok {
		t.Fatal("no build pushed")
	}
	var text strings.Builder
	for i := 0; text.Len() < 12<<20; i++ {
		fmt.Fprintf(&text, "%x\n", sha256.Sum256([]byte(fmt.Sprint(i))))
	}
	file, out, err := testagent.Output(b.Outputs[0], text.String())
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), out.Upload)
	remote := b.UploadDir + "/" + out.Upload
	ctx := context.Background()
	client := func() *sftp.Client {
		c, err := e.dial(key)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := sftp.NewClient(c, upload.ClientOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close(); c.Close() })
		return cl
	}

	// The first 5 MiB, on one connection.
	cut := int64(5<<20 + 12345)
	if err := os.WriteFile(local, file[:cut], 0o644); err != nil {
		t.Fatal(err)
	}
	first := client()
	if st, err := upload.Upload(ctx, first, local, remote, nil); err != nil || st.Sent != cut {
		t.Fatalf("first part: %+v, %v", st, err)
	}
	first.Close()
	// The rest on another: the stream outlived the first session.
	if err := os.WriteFile(local, file, 0o644); err != nil {
		t.Fatal(err)
	}
	second := client()
	if fi, err := second.Stat(remote); err != nil || fi.Size() != cut {
		t.Fatalf("stat on a new connection: %v, %v", fi, err)
	}
	st, err := upload.Upload(ctx, second, local, remote, nil)
	if err != nil || st.Skipped != upload.ResumeOffset(cut, int64(len(file))) || st.Skipped == 0 {
		t.Fatalf("resume: %+v, %v", st, err)
	}
	if ls, err := second.ReadDir(b.UploadDir); err != nil || len(ls) != 1 || ls[0].Size() != int64(len(file)) {
		t.Fatalf("list: %v, %v", ls, err)
	}
	// A second file for the same output is refused, as on disk.
	if _, err := second.Create(b.UploadDir + "/out.nar.xz"); err == nil {
		t.Fatal("a second upload of the output was accepted")
	}
	if ents, _ := os.ReadDir(e.coord.UploadDir(id, b.Build)); len(ents) != 0 {
		t.Fatalf("the upload dir holds %s", ents[0].Name())
	}

	a.send(&protocol.Started{Header: protocol.Header{ID: 2}, Build: b.Build})
	a.expectAck(2)
	a.send(&protocol.Succeeded{Header: protocol.Header{ID: 3}, Build: b.Build, Outputs: []protocol.OutputResult{out}})
	a.expectAck(3)
	ni, err := cc.Lookup(b.Outputs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(cc.Dir(), ni.URL))
	if err != nil || !bytes.Equal(got, file) {
		t.Fatalf("NAR in the cache: %d bytes of %d, %v", len(got), len(file), err)
	}
	if _, err := second.Stat(remote); err == nil {
		t.Fatal("the upload is still listed after the build succeeded")
	}
}
