// Command directbench measures what an agent's upload costs a real `gbc
// coordinator` whose cache is in a bucket of a real S3 server (SeaweedFS
// on loopback, started here), with --cache-direct-upload, in one run:
//
//   - sftp: the agent's own upload code (upload.Upload over SFTP with its
//     concurrent writes); the coordinator receives every byte, verifies
//     the file and sends it to the bucket;
//   - direct: the agent asks for an upload URL (upload-url) and PUTs the
//     file into the bucket (upload.Put); the coordinator reads the object
//     back once to verify it and has the store copy it into place.
//
// Each method uploads -n outputs of -mib MiB (incompressible content,
// zstd as agents send), one build each, alternating methods over -rounds
// rounds. Per output: the upload and the time to the coordinator's ack
// (verification and publication); per method: the coordinator's CPU
// seconds (utime + stime of its process). The agent is internal/testagent
// on a real SSH connection.
//
// Run through bench/direct.sh, which builds gbc first.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkg/sftp"

	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/bench/internal/coordproc"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/protocol"
)

func main() {
	gbc := flag.String("gbc", "bin/gbc", "gbc binary")
	n := flag.Int("n", 4, "outputs per method and round")
	mib := flag.Int("mib", 8, "size of each output in MiB (the test server holds about 1 GiB: n × mib × rounds × 5 must stay under it)")
	rounds := flag.Int("rounds", 2, "alternating rounds per method")
	flag.Parse()
	if err := run(*gbc, *n, *mib, *rounds); err != nil {
		log.Fatal(err)
	}
}

type totals struct {
	outputs       int
	upload, acked time.Duration
	cpu           float64 // coordinator CPU seconds
	bytes         int64
}

func run(gbc string, n, mib, rounds int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gbc-directbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const bucket = "bench"
	weed, creds, err := coordproc.Bucket(ctx, dir, bucket)
	if err != nil {
		return err
	}
	defer weed.Stop()
	storeDir := filepath.Join(dir, "store")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return err
	}
	admin, adminPub, err := coordproc.NewKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.pub"), adminPub, 0o644); err != nil {
		return err
	}
	state := filepath.Join(dir, "state")
	coord := exec.Command(gbc, "coordinator", "--state-dir", state, "--listen", "127.0.0.1:0",
		"--admin-key", filepath.Join(dir, "admin.pub"), "--store-dir", storeDir, "--heartbeat", "10m",
		"--cache-store", weed.URL(bucket, "farm"), "--cache-store-credentials", creds, "--cache-direct-upload")
	stderr, _ := coord.StderrPipe()
	if err := coord.Start(); err != nil {
		return err
	}
	defer func() { coord.Process.Signal(os.Interrupt); coord.Wait() }()
	addr, err := coordproc.WaitAddr(stderr)
	if err != nil {
		return err
	}
	dial, err := coordproc.Dialer(state, addr)
	if err != nil {
		return err
	}
	adminC, err := dial(admin)
	if err != nil {
		return err
	}
	defer adminC.Close()
	agentKey, agentPub, err := coordproc.NewKey()
	if err != nil {
		return err
	}
	if _, err := coordproc.Command(adminC, "agent new --name bench --key '"+strings.TrimSpace(string(agentPub))+"'"); err != nil {
		return err
	}
	agentC, err := dial(agentKey)
	if err != nil {
		return err
	}
	a, err := testagent.Open(agentC)
	if err != nil {
		return err
	}
	defer a.Close()
	if _, err := a.Hello(protocol.Hello{Header: a.Header(), ProtocolVersion: protocol.Version, Name: "bench",
		Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 1, StoreDir: storeDir, Backend: "nix"}); err != nil {
		return err
	}
	sc, err := sftp.NewClient(agentC, upload.ClientOptions()...)
	if err != nil {
		return err
	}
	defer sc.Close()
	msgs := make(chan protocol.Message, 16)
	go func() {
		defer close(msgs)
		for {
			m, err := a.Read()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	next := func(want func(protocol.Message) bool) (protocol.Message, error) {
		t := time.After(5 * time.Minute)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					return nil, errors.New("agent session ended")
				}
				if e, isErr := m.(*protocol.Error); isErr {
					return nil, fmt.Errorf("coordinator: %s", e.Message)
				}
				if want(m) {
					return m, nil
				}
			case <-t:
				return nil, errors.New("no answer from the coordinator")
			}
		}
	}
	hc := upload.HTTPClient()
	seq := 0
	one := func(method string, t *totals) error {
		seq++
		drv, err := coordproc.WriteDrv(storeDir, fmt.Sprintf("direct-bench-%d-%d", time.Now().UnixNano(), seq))
		if err != nil {
			return err
		}
		if _, err := coordproc.Command(adminC, "build "+drv); err != nil {
			return err
		}
		m, err := next(func(m protocol.Message) bool { _, ok := m.(*protocol.Build); return ok })
		if err != nil {
			return err
		}
		b := m.(*protocol.Build)
		if err := a.Send(&protocol.Ack{Header: protocol.Header{ID: b.ID}}); err != nil {
			return err
		}
		content := make([]byte, mib<<20)
		rand.Read(content)
		file, res, err := testagent.Output(b.Outputs[0], string(content))
		if err != nil {
			return err
		}
		local := filepath.Join(dir, res.Upload)
		if err := os.WriteFile(local, file, 0o644); err != nil {
			return err
		}
		defer os.Remove(local)
		start := time.Now()
		switch method {
		case "sftp":
			if _, err := upload.Upload(ctx, sc, local, b.UploadDir+"/"+res.Upload, nil); err != nil {
				return err
			}
		case "direct":
			h := a.Header()
			if err := a.Send(&protocol.UploadURL{Header: h, Build: b.Build, Upload: res.Upload, Size: res.FileSize}); err != nil {
				return err
			}
			m, err := next(func(m protocol.Message) bool { return protocol.IDOf(m) == h.ID })
			if err != nil {
				return err
			}
			tg, ok := m.(*protocol.UploadTarget)
			if !ok {
				return fmt.Errorf("upload-url answered with %s", m.MessageType())
			}
			if _, err := upload.Put(ctx, hc, tg.URL, local); err != nil {
				return err
			}
			res.Direct = tg.Direct
		}
		uploaded := time.Now()
		h := a.Header()
		if err := a.Send(&protocol.Succeeded{Header: h, Build: b.Build, Outputs: []protocol.OutputResult{res}}); err != nil {
			return err
		}
		if _, err := next(func(m protocol.Message) bool { _, ok := m.(*protocol.Ack); return ok && protocol.IDOf(m) == h.ID }); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		t.outputs++
		t.upload += uploaded.Sub(start)
		t.acked += time.Since(start)
		t.bytes += res.FileSize
		return nil
	}
	res := map[string]*totals{"sftp": {}, "direct": {}}
	for r := 0; r < rounds; r++ {
		for _, method := range []string{"sftp", "direct"} {
			t := res[method]
			cpu0, err := coordproc.CPUSeconds(coord.Process.Pid)
			if err != nil {
				return err
			}
			for i := 0; i < n; i++ {
				if err := one(method, t); err != nil {
					return err
				}
			}
			cpu1, err := coordproc.CPUSeconds(coord.Process.Pid)
			if err != nil {
				return err
			}
			t.cpu += cpu1 - cpu0
		}
	}
	s, d := res["sftp"], res["direct"]
	fmt.Printf("%d outputs of %d MiB per method (%d rounds, alternating), zstd of random bytes, SeaweedFS on loopback\n\n", s.outputs, mib, rounds)
	fmt.Printf("| what | sftp | direct | direct / sftp |\n|---|--:|--:|--:|\n")
	per := func(t *totals, d time.Duration) float64 { return float64(d.Milliseconds()) / float64(t.outputs) }
	row := func(what string, a, b float64, unit string) {
		fmt.Printf("| %s | %.1f %s | %.1f %s | %.2f× |\n", what, a, unit, b, unit, b/a)
	}
	row("upload per output", per(s, s.upload), per(d, d.upload), "ms")
	row("upload to ack per output (verified, published)", per(s, s.acked), per(d, d.acked), "ms")
	row("coordinator CPU per output", 1000*s.cpu/float64(s.outputs), 1000*d.cpu/float64(d.outputs), "ms")
	row("coordinator CPU per GiB uploaded", s.cpu/(float64(s.bytes)/(1<<30)), d.cpu/(float64(d.bytes)/(1<<30)), "s")
	return nil
}
