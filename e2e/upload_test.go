package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/agent/upload"
)

// TestUploadResumesAfterAgentKill kills the agent (SIGKILL) while it
// uploads a large output, starts it again with the same work directory,
// and checks that the upload continues from what the coordinator already
// has instead of starting over: written under STATE/uploads (the default
// with a file: store), and streamed into the cache store
// (--stream-uploads on), where what the coordinator has is the stream it
// keeps for the build while the agent is away.
func TestUploadResumesAfterAgentKill(t *testing.T) {
	t.Run("disk", func(t *testing.T) { uploadResumesAfterAgentKill(t, false) })
	t.Run("streamed", func(t *testing.T) { uploadResumesAfterAgentKill(t, true) })
}

var uploadedRE = regexp.MustCompile(`(?m)^gbc_uploaded_bytes_total\{agent="[^"]*"\} (\S+)$`)

func uploadResumesAfterAgentKill(t *testing.T, streamed bool) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "agent")
	coordNix, agentNix := dirs[0], dirs[1]
	drv := nsRun(t, coordNix, "nix-instantiate", "testdata/big.nix", "--argstr", "nonce", fmt.Sprint(time.Now().UnixNano()), "--argstr", "mib", "256")
	var flags []string
	if streamed {
		flags = []string{"--stream-uploads", "on", "--metrics-listen", "127.0.0.1:0"}
	}
	f, _ := newNSFarm(t, coordNix, flags...)
	// How far the upload got: the file on disk, or, streamed, the bytes the
	// coordinator took (its metric; nothing is on its disk).
	var metricsAddr string
	if streamed {
		metricsAddr = f.coord.log.waitFor(t, metricsAddrRE, 30*time.Second)[1]
	}
	key := newKey(t, f.dir, "big")
	agentID := f.mustSSH(fmt.Sprintf("agent new --name big --key '%s'", key.Pub))
	args := []string{"agent", "--coordinator", f.addr, "--identity", key.Path, "--known-hosts", f.knownHosts,
		"--backend", "nix", "--daemon", "exec:nix-daemon --stdio", "--name", "big", "--work-dir", filepath.Join(f.dir, "big-work")}
	n, a := nsCmd(agentNix, gbcBin, args...)
	first := start(t, n, a...)

	id := f.mustSSH("build " + drv)
	remote := filepath.Join(f.state, "uploads", agentID, id, "out.nar.zst")
	local := filepath.Join(f.dir, "big-work", "builds", id, "out.nar.zst")
	have := func() int64 {
		if !streamed {
			if st, err := os.Stat(remote); err == nil {
				return st.Size()
			}
			return 0
		}
		if _, err := os.Stat(remote); err == nil {
			t.Fatal("a streamed upload was written under STATE/uploads")
		}
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var n float64
		if m := uploadedRE.FindSubmatch(body); m != nil {
			n, _ = strconv.ParseFloat(string(m[1]), 64)
		}
		return int64(n)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// Far enough in that the resume margin (one window of concurrent
		// writes) leaves something to skip.
		if have() > 48<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upload started; agent log:\n%s", first.log.String())
		}
		time.Sleep(time.Millisecond)
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.exited(10 * time.Second)
	had := have()
	ls, err := os.Stat(local)
	if err != nil {
		t.Fatalf("packed file gone after the kill: %v", err)
	}
	if had >= ls.Size() {
		t.Skipf("the upload finished (%d bytes) before the kill landed; nothing to resume", ls.Size())
	}
	t.Logf("killed the agent with %d of %d bytes on the coordinator", had, ls.Size())

	second := start(t, n, a...)
	m := second.log.waitFor(t, regexp.MustCompile(`msg="uploaded output".* size=(\d+) sent=(\d+) skipped=(\d+)`), 2*time.Minute)
	size, _ := strconv.ParseInt(m[1], 10, 64)
	sent, _ := strconv.ParseInt(m[2], 10, 64)
	skipped, _ := strconv.ParseInt(m[3], 10, 64)
	t.Logf("after the restart: size %d, sent %d, skipped %d (resumed %.0f%% in)", size, sent, skipped, 100*float64(skipped)/float64(size))
	// Streamed, the metric counted writes that arrived ahead of a gap too,
	// so the bytes taken in order may be up to one window less.
	floor := upload.ResumeOffset(had, ls.Size())
	if streamed {
		floor = upload.ResumeOffset(max(had-8<<20, 0), ls.Size())
	}
	if size != ls.Size() || sent+skipped != size || skipped == 0 || skipped < floor {
		t.Fatalf("upload did not resume: size %d sent %d skipped %d, coordinator had %d", size, sent, skipped, had)
	}
	if regexp.MustCompile(`msg=building`).MatchString(second.log.String()) {
		t.Fatal("the restarted agent built again instead of resuming the upload")
	}
	var b buildJSON
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if b = f.show(id); b.State == "succeeded" {
			break
		}
	}
	if b.State != "succeeded" || b.Agent != agentID || b.Outputs[0].FileSize != size {
		t.Fatalf("build %s on %s, file size %d", b.State, b.Agent, b.Outputs[0].FileSize)
	}
}
