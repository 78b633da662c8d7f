package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/compression"
)

// syncBuf collects a command's stdout while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sshCmd is f.ssh as an unstarted command, for long-running commands.
func (f *farm) sshCmd(ctx context.Context, key sshKey, command string) *exec.Cmd {
	return exec.CommandContext(ctx, "ssh", "-p", f.port, "-i", key.Path,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR", "-F", "/dev/null",
		"someone@127.0.0.1", command)
}

// TestLogFollowAndNixLog: `log --follow` prints the first line of a slow
// build (print, sleep, print) while it is still running and returns when
// it ends; the finished log is in the cache, where `nix log` finds it.
func TestLogFollowAndNixLog(t *testing.T) {
	f := newFarm(t)
	f.addAgent("agent-log")
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "slow", "--argstr", "slowSleep", "4")
	id := f.mustSSH("build " + drv)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := &syncBuf{}
	var stderr bytes.Buffer
	cmd := f.sshCmd(ctx, f.admin, "log --follow "+id)
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "slow build: first line") {
		select {
		case err := <-done:
			t.Fatalf("log --follow ended before the first line: %v\n%s\n%s", err, out.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("log --follow showed no first line:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := f.show(id).State; st != "started" && st != "allocated" {
		t.Fatalf("first line seen, but the build is already %s", st)
	}
	if strings.Contains(out.String(), "last line") {
		t.Fatalf("last line already there while the build runs:\n%s", out.String())
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("log --follow: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("log --follow did not return after the build ended")
	}
	if !strings.Contains(out.String(), "slow build: last line") {
		t.Fatalf("followed log lacks the last line:\n%s", out.String())
	}
	if st := f.show(id).State; st != "succeeded" {
		t.Fatalf("build %s", st)
	}
	full := f.mustSSH("log --attempt 1 " + id)
	if strings.Index(full, "first line") > strings.Index(full, "last line") || strings.Count(full, "first line") != 1 {
		t.Errorf("stored log:\n%s", full)
	}

	// The cache's log/<drv> is what `nix log` fetches. Serve the
	// coordinator's cache directory with the cache's own handler.
	var c *cache.Cache
	logFile := filepath.Join(f.state, "cache", "log", filepath.Base(drv))
	deadline = time.Now().Add(30 * time.Second)
	for {
		if _, err := exec.Command("test", "-s", logFile).Output(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s", logFile)
		}
		time.Sleep(50 * time.Millisecond)
	}
	keys, err := cache.LoadOrCreateKeys(f.state, "unused", "/nix/store", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err = cache.Open(context.Background(), filepath.Join(f.state, "cache"), cache.Options{NixKey: keys.Nix})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/log/" + filepath.Base(drv))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET log/%s: %s", filepath.Base(drv), resp.Status)
	}
	// Stored zstd; served as is to clients that accept zstd, decoded
	// for the others (Go's client asks for gzip only).
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "zstd" {
		zr, err := compression.NewReader(resp.Body, "zstd")
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		body = zr
	}
	fetched, err := io.ReadAll(body)
	if err != nil || string(fetched) != full+"\n" && string(fetched) != full {
		t.Fatalf("log/%s from the cache: %q, %v; want %q", filepath.Base(drv), fetched, err, full)
	}
	// nix log also wants the .drv itself valid in the cache, which
	// publishing derivations on submission provides; do it here.
	if _, err := c.PublishDerivationClosure(context.Background(), drv, ""); err != nil {
		t.Fatal(err)
	}
	nix := exec.Command("nix", "--extra-experimental-features", "nix-command", "log", "--store", srv.URL, drv)
	nix.Env = append(nixEnv(), "XDG_CACHE_HOME="+t.TempDir())
	shown, err := nix.CombinedOutput()
	if err != nil {
		t.Fatalf("nix log: %v\n%s", err, shown)
	}
	if !strings.Contains(string(shown), "slow build: first line") || !strings.Contains(string(shown), "slow build: last line") {
		t.Fatalf("nix log shows:\n%s", shown)
	}
}
