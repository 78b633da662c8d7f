// Package coordproc holds what the benchmarks that drive a real `gbc
// coordinator` process share: its address from its log, SSH keys and
// commands to it, derivations to submit, and the process's CPU time and
// disk writes from /proc.
package coordproc

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/internal/s3test"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/nixhash"
)

// AddrRE matches the coordinator's "listening" log line; its group is the
// SSH address.
var AddrRE = regexp.MustCompile(`coordinator listening" addr=(127\.0\.0\.1:\d+)`)

// WaitAddr reads the coordinator's log until it names its SSH address,
// then drains the rest in the background.
func WaitAddr(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := AddrRE.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, r)
			return m[1], nil
		}
	}
	return "", errors.New("coordinator did not report its address")
}

// NewKey is a fresh ed25519 SSH key and its authorized_keys line.
func NewKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return s, ssh.MarshalAuthorizedKey(s.PublicKey()), nil
}

// Command runs cmd on the coordinator over c and returns its output.
func Command(c *ssh.Client, cmd string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.Output(cmd)
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Fields(cmd)[0], err)
	}
	return strings.TrimSpace(string(out)), nil
}

// WriteDrv writes a derivation with one output, named after name, at the
// path its contents hash to, in storeDir.
func WriteDrv(storeDir, name string) (string, error) {
	sum := sha256.Sum256([]byte(name))
	return testagent.Derivation(storeDir + "/" + nixhash.Base32(sum[:20]) + "-" + name)
}

// CPUSeconds is the user and system CPU time of process pid so far.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / 100, nil // USER_HZ
}

// WriteBytes is what process pid caused to be written to storage so far
// (write_bytes of /proc/PID/io, counted as pages are dirtied: a file
// written then deleted before writeback counts too).
func WriteBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	return parseIO(string(b))
}

func parseIO(s string) (int64, error) {
	var w int64
	seen := false
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("io %s: %w", k, err)
		}
		if k == "write_bytes" {
			w, seen = n, true
		}
	}
	if !seen {
		return 0, errors.New("io: no write_bytes")
	}
	return w, nil
}

// Bucket starts a SeaweedFS S3 server with its data under dir, makes the
// bucket and writes an AWS credentials file for it (for
// --cache-store-credentials); the caller stops the server.
func Bucket(ctx context.Context, dir, bucket string) (*s3test.Server, string, error) {
	weed, err := s3test.Launch(filepath.Join(dir, "weed"))
	if err != nil {
		return nil, "", err
	}
	if err := weed.MakeBucket(ctx, bucket); err != nil {
		weed.Stop()
		return nil, "", err
	}
	creds := filepath.Join(dir, "credentials")
	if err := s3test.WriteCredentials(creds); err != nil {
		weed.Stop()
		return nil, "", err
	}
	return weed, creds, nil
}

// Dialer connects to the coordinator at addr whose state directory is
// stateDir, checking its host key.
func Dialer(stateDir, addr string) (func(ssh.Signer) (*ssh.Client, error), error) {
	hostPub, err := os.ReadFile(filepath.Join(stateDir, "ssh_host_ed25519_key.pub"))
	if err != nil {
		return nil, err
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey(hostPub)
	if err != nil {
		return nil, err
	}
	return func(s ssh.Signer) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "bench", Auth: []ssh.AuthMethod{ssh.PublicKeys(s)}, HostKeyCallback: ssh.FixedHostKey(hk)})
	}, nil
}
