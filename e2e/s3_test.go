package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/gbc-farm/gbc/internal/s3test"
	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

// TestChainOnS3 is TestChainAcrossStores with the cache in a bucket of a
// real S3 server (SeaweedFS), credentials from a shared credentials file:
// agent one builds a and b, the object store is killed and restarted,
// agent two builds c substituting b and a through its SSH connection (the
// coordinator serving them from the bucket); then empty stores run a real
// nix-store --realise from the bucket's own HTTP endpoint with signatures
// required: the coordinator's key works, another key does not. Every
// narinfo in the bucket names a NAR object that is there and hashes to it.
func TestChainOnS3(t *testing.T) {
	requireNamespaces(t)
	weed := s3test.Start(t)
	bucket := weed.Bucket(t, "gbc-e2e-chain")
	dirs := mkdirs(t, "coord", "one", "two", "client", "otherkey")
	coordNix, oneNix, twoNix := dirs[0], dirs[1], dirs[2]
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := s3test.WriteCredentials(creds); err != nil {
		t.Fatal(err)
	}

	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"a", "b", "c"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "testdata/chain.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	f, _ := newNSFarm(t, coordNix, "--cache-store", weed.URL(bucket, "farm"), "--cache-store-credentials", creds)
	one := f.addNSAgent(oneNix, "agent-one", "--require-tag", "lane=one")
	two := f.addNSAgent(twoNix, "agent-two", "--require-tag", "lane=two")

	ab := lines(f.mustSSH("build --tag lane=one " + drv["a"] + " " + drv["b"]))
	for _, id := range ab {
		deadline := time.Now().Add(2 * time.Minute)
		for b := f.show(id); b.State != "succeeded"; b = f.show(id) {
			if time.Now().After(deadline) || b.State == "failed" {
				t.Fatalf("build %s: %s\nagent one:\n%s", id, b.State, one.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// The object store goes away and comes back between the builds.
	weed.Stop()
	weed.Restarted(t)

	r := f.ssh(f.admin, "build --wait --tag lane=two "+drv["c"])
	if r.Code != 0 {
		t.Fatalf("build c: exit %d\n%s\n%s\nagent two:\n%s", r.Code, r.Stdout, r.Stderr, two.log.String())
	}
	out := map[string]string{}
	for attr, w := range map[string]struct{ id, agent string }{"a": {ab[0], one.ID}, "b": {ab[1], one.ID}, "c": {lines(r.Stdout)[0], two.ID}} {
		b := f.show(w.id)
		if b.State != "succeeded" || b.Agent != w.agent {
			t.Fatalf("%s: %s on %s, want succeeded on %s", attr, b.State, b.Agent, w.agent)
		}
		out[attr] = b.Outputs[0].Path
	}
	for _, attr := range []string{"a", "b"} {
		if !valid(twoNix, out[attr]) {
			t.Fatalf("%s's output is not in agent two's store", attr)
		}
	}
	if !strings.Contains(two.log.String(), "inputs substituted") {
		t.Fatalf("agent two did not log its substitution:\n%s", two.log.String())
	}
	// Nothing of the cache is on the coordinator's disk.
	if ents, err := os.ReadDir(filepath.Join(f.state, "cache")); err == nil && len(ents) > 0 {
		t.Fatalf("state/cache holds %d entries with the cache in a bucket", len(ents))
	}

	// Every narinfo in the bucket names a NAR object of its FileSize and
	// FileHash.
	cli := weed.Client(t)
	ctx := context.Background()
	narinfos := 0
	for oi := range cli.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "farm/"}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if !strings.HasSuffix(oi.Key, ".narinfo") {
			continue
		}
		narinfos++
		ni, err := narinfo.Parse(readObject(t, cli, bucket, oi.Key))
		if err != nil {
			t.Fatalf("%s: %v", oi.Key, err)
		}
		nar := readObject(t, cli, bucket, "farm/"+ni.URL)
		if uint64(len(nar)) != ni.FileSize || !nixhash.NewSHA256(sha256.Sum256(nar)).Equal(ni.FileHash) {
			t.Fatalf("%s: NAR object %s is %d bytes, FileSize %d, or its hash differs", oi.Key, ni.URL, len(nar), ni.FileSize)
		}
	}
	if narinfos < 6 { // 3 outputs, 3 .drv files (and their sources)
		t.Fatalf("%d narinfos in the bucket", narinfos)
	}

	// Third parties substitute from the bucket itself.
	pub, err := os.ReadFile(filepath.Join(f.state, "signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	bucketURL := "http://" + weed.Endpoint + "/" + bucket + "/farm"
	substitute := func(nixDir, key string) (string, error) {
		_, stderr, err := nsTry(nixDir, "nix-store", "--realise", out["c"],
			"--option", "substituters", bucketURL,
			"--option", "trusted-public-keys", key,
			"--option", "require-sigs", "true",
			"--option", "narinfo-cache-negative-ttl", "0")
		return stderr, err
	}
	if stderr, err := substitute(dirs[3], strings.TrimSpace(string(pub))); err != nil {
		t.Fatalf("substituting c from the bucket: %v\n%s", err, stderr)
	}
	if got := nsRun(t, dirs[3], "cat", out["c"]+"/c.txt"); !strings.Contains(got, "a ("+nonce+")") || !valid(dirs[3], out["b"]) {
		t.Fatalf("substituted closure of c: c.txt %q", got)
	}
	other, err := signing.GenerateNixKey("someone-else-1")
	if err != nil {
		t.Fatal(err)
	}
	if stderr, err := substitute(dirs[4], other.Public().String()); err == nil || valid(dirs[4], out["c"]) || !strings.Contains(stderr, "is not signed by any of the keys") {
		t.Fatalf("the bucket's narinfos were not refused with another key (err %v)\n%s", err, stderr)
	}
}

func readObject(t *testing.T, cli *minio.Client, bucket, key string) []byte {
	t.Helper()
	o, err := cli.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, 64<<20))
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// TestCoordinatorKilledDuringLargeUploadS3: with the cache in a bucket,
// the coordinator is killed (SIGKILL) while an agent uploads a large
// output — streamed into the bucket, so while its parts are being PUT
// there — and started again on the same state and port. The agent
// reconnects and uploads again (the new process has no stream to resume;
// it aborted the old one's multipart upload at start); the build succeeds and the bucket
// holds its narinfo and a NAR object of exactly the reported size and
// hash; no incomplete multipart upload is left.
func TestCoordinatorKilledDuringLargeUploadS3(t *testing.T) {
	requireNamespaces(t)
	weed := s3test.Start(t)
	bucket := weed.Bucket(t, "gbc-e2e-kill")
	dirs := mkdirs(t, "coord", "agent")
	coordNix, agentNix := dirs[0], dirs[1]
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := s3test.WriteCredentials(creds); err != nil {
		t.Fatal(err)
	}
	drv := nsRun(t, coordNix, "nix-instantiate", "testdata/big.nix", "--argstr", "nonce", fmt.Sprint(time.Now().UnixNano()), "--argstr", "mib", "128")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	storeFlags := []string{"--cache-store", weed.URL(bucket, ""), "--cache-store-credentials", creds, "--listen", listen}
	f, _ := newNSFarm(t, coordNix, storeFlags...)
	key := newKey(t, f.dir, "big")
	agentID := f.mustSSH(fmt.Sprintf("agent new --name big --key '%s'", key.Pub))
	n, a := nsCmd(agentNix, gbcBin, "agent", "--coordinator", f.addr, "--identity", key.Path, "--known-hosts", f.knownHosts,
		"--backend", "nix", "--daemon", "exec:nix-daemon --stdio", "--name", "big", "--work-dir", filepath.Join(f.dir, "big-work"))
	agent := start(t, n, a...)

	id := f.mustSSH("build " + drv)
	// The upload streams into the bucket (--stream-uploads is on with an
	// s3:// store): it shows as a multipart upload there, and nothing is
	// written under the coordinator's upload dir.
	updir := filepath.Join(f.state, "uploads", agentID, id)
	cli := weed.Client(t)
	deadline := time.Now().Add(2 * time.Minute)
	for streamed := false; !streamed; {
		streamed = streamedBytes(t, cli, bucket) > 32<<20
		if ents, _ := os.ReadDir(updir); len(ents) > 0 {
			t.Fatalf("the upload was written to the coordinator's disk: %s", ents[0].Name())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upload of more than 32 MiB streaming into the bucket; agent log:\n%s", agent.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := f.coord.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	f.coord.exited(10 * time.Second)
	name, args := nsCmd(coordNix, gbcBin, append([]string{"coordinator", "--state-dir", f.state,
		"--admin-key", f.admin.Path + ".pub", "--http-listen", "127.0.0.1:0"}, storeFlags...)...)
	f.coord = start(t, name, args...)
	f.coord.log.waitFor(t, addrRE, 30*time.Second)

	var b buildJSON
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if b = f.show(id); b.State == "succeeded" || b.State == "failed" {
			break
		}
	}
	if b.State != "succeeded" || b.Agent != agentID {
		t.Fatalf("build %s on %s\nagent log:\n%s", b.State, b.Agent, agent.log.String())
	}
	o := b.Outputs[0]
	ni, err := narinfo.Parse(readObject(t, cli, bucket, filepath.Base(o.Path)[:32]+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := cli.StatObject(context.Background(), bucket, ni.URL, minio.StatObjectOptions{})
	if err != nil || uint64(st.Size) != ni.FileSize || st.Size != o.FileSize {
		t.Fatalf("NAR object %s: %d bytes (%v), narinfo FileSize %d, reported %d", ni.URL, st.Size, err, ni.FileSize, o.FileSize)
	}
	for up := range cli.ListIncompleteUploads(context.Background(), bucket, "", true) {
		if up.Err == nil {
			t.Fatalf("incomplete upload left: %s", up.Key)
		}
	}
	for oi := range cli.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "_gbc-uploads/", Recursive: true}) {
		if oi.Err == nil {
			t.Fatalf("temp object left: %s", oi.Key)
		}
	}
}

// streamedBytes is what the parts of the multipart uploads in progress
// under the bucket's temp area hold.
func streamedBytes(t *testing.T, cli *minio.Client, bucket string) int64 {
	t.Helper()
	ctx := context.Background()
	core := minio.Core{Client: cli}
	var n int64
	for up := range cli.ListIncompleteUploads(ctx, bucket, "_gbc-uploads/", true) {
		if up.Err != nil {
			continue
		}
		parts, err := core.ListObjectParts(ctx, bucket, up.Key, up.UploadID, 0, 1000)
		if err != nil {
			continue // completed or aborted meanwhile
		}
		for _, p := range parts.ObjectParts {
			n += p.Size
		}
	}
	return n
}

// TestChainOnS3Direct is the chain farm with --cache-direct-upload: both
// agents PUT every output straight into the bucket with the URLs the
// coordinator hands out, so its SFTP receives no output bytes (the upload
// metric stays at zero) while every output is verified from the bucket
// (gbc_upload_verified_bytes_total{via="direct"}); agent two substitutes
// a and b through its tunnel, nothing is left under the temp prefix, and
// a real nix-store --realise with signatures required substitutes c from
// the bucket's own endpoint.
func TestChainOnS3Direct(t *testing.T) {
	requireNamespaces(t)
	weed := s3test.Start(t)
	bucket := weed.Bucket(t, "gbc-e2e-direct")
	dirs := mkdirs(t, "coord", "one", "two", "client")
	coordNix, oneNix, twoNix := dirs[0], dirs[1], dirs[2]
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := s3test.WriteCredentials(creds); err != nil {
		t.Fatal(err)
	}
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"a", "b", "c"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "testdata/chain.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	f, _ := newNSFarm(t, coordNix, "--cache-store", weed.URL(bucket, "farm"), "--cache-store-credentials", creds,
		"--cache-direct-upload", "--metrics-listen", "127.0.0.1:0")
	metricsAddr := f.coord.log.waitFor(t, metricsAddrRE, 5*time.Second)[1]
	one := f.addNSAgent(oneNix, "agent-one", "--require-tag", "lane=one")
	two := f.addNSAgent(twoNix, "agent-two", "--require-tag", "lane=two")

	ab := lines(f.mustSSH("build --tag lane=one " + drv["a"] + " " + drv["b"]))
	for _, id := range ab {
		if b := f.waitSucceeded(id); b.Agent != one.ID {
			t.Fatalf("build %s on %s, want agent one", id, b.Agent)
		}
	}
	r := f.ssh(f.admin, "build --wait --tag lane=two "+drv["c"])
	if r.Code != 0 {
		t.Fatalf("build c: exit %d\n%s\n%s\nagent two:\n%s", r.Code, r.Stdout, r.Stderr, two.log.String())
	}
	c := f.show(lines(r.Stdout)[0])
	if c.State != "succeeded" || c.Agent != two.ID {
		t.Fatalf("c: %s on %s", c.State, c.Agent)
	}
	if !strings.Contains(two.log.String(), "inputs substituted") {
		t.Fatalf("agent two did not log its substitution:\n%s", two.log.String())
	}
	for _, w := range []struct {
		a agentProc
		n int
	}{{one, 2}, {two, 1}} {
		log := w.a.log.String()
		if got := strings.Count(log, `msg="uploaded output directly"`); got != w.n || strings.Contains(log, `msg="uploaded output" `) {
			t.Fatalf("agent %s: %d direct uploads, want %d, and none over SFTP:\n%s", w.a.ID, got, w.n, log)
		}
	}

	// The coordinator's SFTP took no output bytes; it read every output
	// back from the bucket instead.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var direct float64
	for _, l := range strings.Split(string(body), "\n") {
		var v float64
		switch {
		case strings.HasPrefix(l, "gbc_uploaded_bytes_total{"):
			if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err != nil || v != 0 {
				t.Fatalf("SFTP received output bytes: %s", l)
			}
		case strings.HasPrefix(l, `gbc_upload_verified_bytes_total{via="sftp"}`):
			t.Fatalf("an upload was verified from SFTP: %s", l)
		case strings.HasPrefix(l, `gbc_upload_verified_bytes_total{via="direct"}`):
			fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &direct)
		}
	}
	if direct <= 0 {
		t.Fatalf("no bytes verified from direct uploads:\n%s", body)
	}
	if ents, err := os.ReadDir(filepath.Join(f.state, "cache")); err == nil && len(ents) > 0 {
		t.Fatalf("state/cache holds %d entries with the cache in a bucket", len(ents))
	}
	cli := weed.Client(t)
	for oi := range cli.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "farm/_gbc-uploads/", Recursive: true}) {
		t.Fatalf("temp object left: %s %v", oi.Key, oi.Err)
	}

	pub, err := os.ReadFile(filepath.Join(f.state, "signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, err := nsTry(dirs[3], "nix-store", "--realise", c.Outputs[0].Path,
		"--option", "substituters", "http://"+weed.Endpoint+"/"+bucket+"/farm",
		"--option", "trusted-public-keys", strings.TrimSpace(string(pub)),
		"--option", "require-sigs", "true",
		"--option", "narinfo-cache-negative-ttl", "0")
	if err != nil {
		t.Fatalf("substituting c from the bucket: %v\n%s", err, stderr)
	}
	if got := nsRun(t, dirs[3], "cat", c.Outputs[0].Path+"/c.txt"); !strings.Contains(got, "a ("+nonce+")") {
		t.Fatalf("substituted c.txt %q", got)
	}
}
