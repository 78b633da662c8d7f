// Package testagent is the one build agent for tests and benchmarks that
// drive the coordinator message by message. It speaks gbc-agent-v1 on the
// real subsystem of a real SSH connection and uploads over the real SFTP
// subsystem, but builds nothing: the caller decides what it says and
// when. Its outputs are real NARs (Output), so the coordinator verifies
// and publishes them as it would an agent's.
package testagent

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storepath"
)

// Agent is one agent session. Send, Raw and Header may be called from
// any goroutine; Read from one at a time.
type Agent struct {
	client *ssh.Client
	sess   *ssh.Session
	in     io.WriteCloser
	r      *protocol.Reader

	wmu sync.Mutex
	w   *protocol.Writer

	nextID atomic.Uint64

	sftpOnce sync.Once
	sftp     *sftp.Client
	sftpErr  error
}

// Open starts the agent subsystem on client, which the Agent then owns
// (Close closes it).
func Open(client *ssh.Client) (*Agent, error) {
	sess, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("agent session: %w", err)
	}
	in, err := sess.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("agent session stdin: %w", err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("agent session stdout: %w", err)
	}
	if err := sess.RequestSubsystem(protocol.Subsystem); err != nil {
		return nil, fmt.Errorf("subsystem %s: %w", protocol.Subsystem, err)
	}
	return &Agent{
		client: client, sess: sess, in: in,
		r: protocol.NewReader(bufio.NewReaderSize(out, 64<<10), protocol.DefaultMaxLineBytes),
		w: protocol.NewWriter(in, protocol.DefaultMaxLineBytes),
	}, nil
}

// Client is the SSH connection the session runs on.
func (a *Agent) Client() *ssh.Client { return a.client }

// Header returns a header with the session's next message id.
func (a *Agent) Header() protocol.Header { return protocol.Header{ID: a.nextID.Add(1)} }

// Hello sends h, with the protocol version and an id filled in when they
// are zero, and reads the reply: the welcome, or an error.
func (a *Agent) Hello(h protocol.Hello) (*protocol.Welcome, error) {
	if h.ProtocolVersion == 0 {
		h.ProtocolVersion = protocol.Version
	}
	if h.ID == 0 {
		h.Header = a.Header()
	}
	if err := a.Send(&h); err != nil {
		return nil, err
	}
	m, err := a.Read()
	if err != nil {
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	w, ok := m.(*protocol.Welcome)
	if !ok {
		return nil, fmt.Errorf("got %T %+v, want welcome", m, m)
	}
	return w, nil
}

// Send writes one message.
func (a *Agent) Send(m protocol.Message) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	return a.w.Write(m)
}

// Raw writes line and a newline as they are, for malformed input.
func (a *Agent) Raw(line string) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_, err := io.WriteString(a.in, line+"\n")
	return err
}

// Read returns the next message from the coordinator. It blocks until
// one arrives or the session ends.
func (a *Agent) Read() (protocol.Message, error) { return a.r.Read() }

// SFTP is the session's SFTP client, opened on first use.
func (a *Agent) SFTP() (*sftp.Client, error) {
	a.sftpOnce.Do(func() {
		a.sftp, a.sftpErr = sftp.NewClient(a.client)
		if a.sftpErr != nil {
			a.sftpErr = fmt.Errorf("sftp: %w", a.sftpErr)
		}
	})
	return a.sftp, a.sftpErr
}

// Upload writes a NAR of content (Output) for b's first output into b's
// upload directory over SFTP and returns the result to report.
func (a *Agent) Upload(b *protocol.Build, content string) (protocol.OutputResult, error) {
	if len(b.Outputs) == 0 {
		return protocol.OutputResult{}, fmt.Errorf("build %s declares no output", b.Build)
	}
	file, res, err := Output(b.Outputs[0], content)
	if err != nil {
		return protocol.OutputResult{}, err
	}
	cl, err := a.SFTP()
	if err != nil {
		return protocol.OutputResult{}, err
	}
	p := b.UploadDir + "/" + res.Upload
	f, err := cl.Create(p)
	if err != nil {
		return protocol.OutputResult{}, fmt.Errorf("sftp create %s: %w", p, err)
	}
	if _, err := f.Write(file); err != nil {
		f.Close()
		return protocol.OutputResult{}, fmt.Errorf("sftp write %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return protocol.OutputResult{}, fmt.Errorf("sftp close %s: %w", p, err)
	}
	return res, nil
}

// Close ends the session and the connection.
func (a *Agent) Close() error {
	if a.sftp != nil {
		a.sftp.Close()
	}
	return a.client.Close()
}

// Output makes the upload of output o whose content is one regular file
// holding content: the zstd-compressed NAR to store as the result's
// Upload name, and the result with its hashes and sizes (no references).
func Output(o protocol.OutputRef, content string) ([]byte, protocol.OutputResult, error) {
	dir, err := os.MkdirTemp("", "testagent-")
	if err != nil {
		return nil, protocol.OutputResult{}, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "f")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		return nil, protocol.OutputResult{}, err
	}
	var narBuf bytes.Buffer
	if err := nar.Dump(&narBuf, src); err != nil {
		return nil, protocol.OutputResult{}, fmt.Errorf("nar of %s: %w", src, err)
	}
	var comp bytes.Buffer
	w, err := compression.NewWriter(&comp, "zstd")
	if err != nil {
		return nil, protocol.OutputResult{}, err
	}
	if _, err := w.Write(narBuf.Bytes()); err != nil {
		return nil, protocol.OutputResult{}, fmt.Errorf("compress nar: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, protocol.OutputResult{}, fmt.Errorf("compress nar: %w", err)
	}
	narHash := sha256.Sum256(narBuf.Bytes())
	fileHash := sha256.Sum256(comp.Bytes())
	name := o.Name
	if name == "" {
		name = "out"
	}
	return comp.Bytes(), protocol.OutputResult{
		Name: name, Path: o.Path,
		NarHash: nixhash.NewSHA256(narHash).String(), NarSize: int64(narBuf.Len()),
		FileHash: nixhash.NewSHA256(fileHash).String(), FileSize: int64(comp.Len()),
		Compression: "zstd", References: []string{}, Upload: name + ".nar.zst",
	}, nil
}

// Derivation writes a derivation building out (a store path) from the
// given input derivations at the path its contents hash to, as a
// coordinator with a cache requires, and returns that path.
func Derivation(out string, inputs ...string) (string, error) {
	sp, err := storepath.Parse(out)
	if err != nil {
		return "", err
	}
	d := &derivation.Derivation{
		Outputs: []derivation.Output{{Name: "out", Path: out}},
		System:  "x86_64-linux",
		Builder: "/bin/sh",
		Args:    []string{"-c", "echo hi > $out"},
		Env:     []derivation.EnvVar{{Key: "out", Value: out}, {Key: "name", Value: sp.Name}},
	}
	for _, in := range inputs {
		d.InputDrvs = append(d.InputDrvs, derivation.InputDrv{Path: in, Outputs: []string{"out"}})
	}
	p, err := d.DrvPath()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(p, d.Bytes(), 0o644); err != nil {
		return "", err
	}
	return p, nil
}
