// Package s3test runs a real S3-compatible object store for tests: a
// SeaweedFS `weed server -s3` on loopback ports with its data in a temp
// directory (scripts/install-weed.sh builds the binary). Without `weed`
// on PATH a test skips, saying so, except under CI=true, where it fails.
package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Keys of the one read-write identity; anonymous clients may read.
const (
	AccessKey = "gbc-test-access"
	SecretKey = "gbc-test-secret-key-0123456789"
	Region    = "us-east-1"
)

// Server is a running (or stopped) weed server.
type Server struct {
	bin      string
	dir      string
	ports    []int  // master, volume, filer, s3, then their gRPC ports
	Endpoint string // 127.0.0.1:PORT of the S3 gateway

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedBuffer
}

// lockedBuffer collects weed's output, written by exec's copiers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // enough to say why it failed
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs a weed server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("weed"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("weed (SeaweedFS) is not installed: run scripts/install-weed.sh")
		}
		t.Skip("weed (SeaweedFS) is not installed; scripts/install-weed.sh builds it")
	}
	s, err := Launch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Launch runs a weed server with its data under dir (for benchmarks; tests
// call Start). The caller stops it.
func Launch(dir string) (*Server, error) {
	bin, err := exec.LookPath("weed")
	if err != nil {
		return nil, fmt.Errorf("s3test: weed (SeaweedFS) is not installed; scripts/install-weed.sh builds it: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	if s.ports, err = freePorts(8); err != nil {
		return nil, err
	}
	s.Endpoint = "127.0.0.1:" + strconv.Itoa(s.ports[3])
	conf := fmt.Sprintf(`{"identities": [
  {"name": "anonymous", "actions": ["Read"]},
  {"name": "gbc", "credentials": [{"accessKey": %q, "secretKey": %q}],
   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
]}`, AccessKey, SecretKey)
	if err := os.WriteFile(filepath.Join(s.dir, "s3.json"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o755); err != nil {
		return nil, err
	}
	if err := s.Restart(); err != nil {
		return nil, err
	}
	return s, nil
}

// freePorts reserves n distinct loopback ports at once, then frees them
// for weed (which cannot be told to pick its own).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Restart starts the server (again, on the same data and ports) and waits
// until its S3 gateway stores and reads an object.
func (s *Server) Restart() error {
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return errors.New("s3test: Restart while running")
	}
	p := s.ports
	args := []string{"server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir=" + filepath.Join(s.dir, "data"), "-volume.max=16", "-master.volumeSizeLimitMB=64",
		"-master.port=" + strconv.Itoa(p[0]), "-volume.port=" + strconv.Itoa(p[1]),
		"-filer", "-filer.port=" + strconv.Itoa(p[2]),
		"-s3", "-s3.port=" + strconv.Itoa(p[3]), "-s3.config=" + filepath.Join(s.dir, "s3.json"),
		"-master.port.grpc=" + strconv.Itoa(p[4]), "-volume.port.grpc=" + strconv.Itoa(p[5]),
		"-filer.port.grpc=" + strconv.Itoa(p[6]), "-s3.port.grpc=" + strconv.Itoa(p[7]),
		"-volume.preStopSeconds=0",
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	s.logs = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("s3test: start weed: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	done := s.done
	go func() { cmd.Wait(); close(done) }()
	s.mu.Unlock()
	if err := s.waitReady(done); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// waitReady polls until a probe object round-trips, the process exits,
// or two minutes pass (weed takes a few seconds to elect its master and
// register the volume server).
func (s *Server) waitReady(done chan struct{}) error {
	cli, err := s.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("s3test: weed exited before it was ready:\n%s", s.logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		last = probe(ctx, cli)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("s3test: weed not ready after 2 minutes: %w\n%s", last, s.logs.String())
}

func probe(ctx context.Context, cli *minio.Client) error {
	const bucket = "gbc-s3test-probe"
	ok, err := cli.BucketExists(ctx, bucket)
	if err != nil {
		return err
	}
	if !ok {
		if err := cli.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: Region}); err != nil {
			return err
		}
	}
	if _, err := cli.PutObject(ctx, bucket, "probe", bytes.NewReader([]byte("ok")), 2, minio.PutObjectOptions{}); err != nil {
		return err
	}
	_, err = cli.StatObject(ctx, bucket, "probe", minio.StatObjectOptions{})
	return err
}

// Stop kills the server (SIGKILL: what a crash of the object store
// looks like) and waits for it to exit. Restart brings it back.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

func (s *Server) client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: Region,
		BucketLookup: minio.BucketLookupPath,
	})
}

// Client is a client of the gateway with the read-write keys.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	cli, err := s.client()
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	cli, err := s.client()
	if err != nil {
		return err
	}
	if err := cli.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		return fmt.Errorf("s3test: make bucket %s: %w", name, err)
	}
	return nil
}

// Bucket creates a bucket for a test and returns its name.
func (s *Server) Bucket(t testing.TB, name string) string {
	t.Helper()
	if err := s.MakeBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

// Restarted is Restart for a test.
func (s *Server) Restarted(t testing.TB) {
	t.Helper()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
}

// URL is the s3:// store URL of bucket/prefix on this server.
func (s *Server) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&scheme=http", bucket, prefix, s.Endpoint, Region)
}

// WriteCredentials writes an AWS shared credentials file for the test
// server's keys (profile default) at path, for --cache-store-credentials.
func WriteCredentials(path string) error {
	return os.WriteFile(path, []byte("[default]\naws_access_key_id = "+AccessKey+"\naws_secret_access_key = "+SecretKey+"\n"), 0o600)
}
