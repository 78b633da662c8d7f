package sshd

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gbc-farm/gbc/agent/upload"
)

// TestUploadWithAgentClientOptions uploads through this server with the
// agent's own client settings: writes larger than the 32 KiB every SFTP
// server must accept (upload.ClientOptions), concurrent, resumed. A server
// that stopped taking them would fail here, not on a farm.
func TestUploadWithAgentClientOptions(t *testing.T) {
	e := newEnvWith(t, func(c *Config) { c.MaxUploadBytes = 64 << 20 })
	id, key := e.newAgent()
	_, b := e.allocate(key)
	c, err := e.dial(key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := sftp.NewClient(c, upload.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	data := make([]byte, 9<<20+777)
	rand.Read(data)
	local := filepath.Join(t.TempDir(), "out.nar.zst")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	remote := "/uploads/" + b.Build + "/out.nar.zst"
	real := filepath.Join(e.coord.UploadDir(id, b.Build), "out.nar.zst")
	ctx := context.Background()
	if st, err := upload.Upload(ctx, cl, local, remote, nil); err != nil || st.Sent != int64(len(data)) || st.Skipped != 0 {
		t.Fatalf("upload: %+v, %v", st, err)
	}
	if got, _ := os.ReadFile(real); !bytes.Equal(got, data) {
		t.Fatalf("on disk: %d bytes, differ from the %d uploaded", len(got), len(data))
	}

	// A cut-short remote file resumes: the tail is sent again.
	if err := os.Truncate(real, 7<<20+5); err != nil {
		t.Fatal(err)
	}
	st, err := upload.Upload(ctx, cl, local, remote, nil)
	if err != nil || st.Skipped != upload.ResumeOffset(7<<20+5, int64(len(data))) || st.Skipped == 0 {
		t.Fatalf("resume: %+v, %v", st, err)
	}
	if got, _ := os.ReadFile(real); !bytes.Equal(got, data) {
		t.Fatal("on disk after resume: differs")
	} // Every byte written counts, the resent tail again.
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.srv.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "gbc_uploaded_bytes_total" && m.GetLabel()[0].GetValue() == id {
				got = m.GetCounter().GetValue()
			}
		}
	}
	if want := float64(int64(len(data)) + st.Sent); got != want {
		t.Fatalf("gbc_uploaded_bytes_total{agent=%q} = %v, want %v", id, got, want)
	}
}
