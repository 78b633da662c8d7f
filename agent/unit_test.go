package agent

import (
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/gbc-farm/gbc/protocol"
)

func TestParseProc(t *testing.T) {
	mem, err := parseMemTotal([]byte("MemTotal:       16314788 kB\nMemFree:          123 kB\n"))
	if err != nil || mem != 16314788*1024 {
		t.Errorf("MemTotal: %d, %v", mem, err)
	}
	for _, bad := range []string{"", "MemFree: 1 kB\n", "MemTotal: x kB\n", "MemTotal: 1 MB\n"} {
		if _, err := parseMemTotal([]byte(bad)); err == nil {
			t.Errorf("meminfo %q: no error", bad)
		}
	}
	load, err := parseLoad1([]byte("0.52 0.58 0.59 1/389 12345\n"))
	if err != nil || load != 0.52 {
		t.Errorf("load %v, %v", load, err)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if _, err := parseLoad1([]byte(bad)); err == nil {
			t.Errorf("loadavg %q: no error", bad)
		}
	}
	h := hardware(t.TempDir())
	if h.Cores == 0 || h.FreeDiskBytes == 0 {
		t.Errorf("hardware %+v", h)
	}
}

func TestSystemFor(t *testing.T) {
	tests := []struct{ machine, goos, want string }{
		{"x86_64", "linux", "x86_64-linux"},
		{"aarch64", "linux", "aarch64-linux"},
		{"arm64", "darwin", "aarch64-darwin"},
		{"i686", "linux", "i686-linux"},
		{"ppc64le", "linux", "powerpc64le-linux"},
		{"armv7l", "linux", "armv7l-linux"},
		{"vax", "linux", ""},
		{"x86_64", "plan9", ""},
	}
	for _, tt := range tests {
		got, err := SystemFor(tt.machine, tt.goos)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("SystemFor(%q, %q) = %q, %v; want %q", tt.machine, tt.goos, got, err, tt.want)
		}
	}
	if s, err := DefaultSystem(); err != nil || !strings.Contains(s, "-") {
		t.Errorf("DefaultSystem() = %q, %v", s, err)
	}
}

func TestHostKeyAlgorithms(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := gossh.NewPublicKey(&rk.PublicKey)
	edPub := newSigner(t).PublicKey()
	p := filepath.Join(t.TempDir(), "known_hosts")
	content := knownhosts.Line([]string{"[10.0.0.1]:2222"}, edPub) + "\n" +
		knownhosts.Line([]string{"[10.0.0.2]:2222"}, rsaPub) + "\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostKeyAlgorithms(cb, "10.0.0.1:2222"); !reflect.DeepEqual(got, []string{gossh.KeyAlgoED25519}) {
		t.Errorf("ed25519 host: %q", got)
	}
	if got := hostKeyAlgorithms(cb, "10.0.0.2:2222"); !reflect.DeepEqual(got, []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA}) {
		t.Errorf("rsa host: %q", got)
	}
	if got := hostKeyAlgorithms(cb, "10.0.0.3:2222"); got != nil {
		t.Errorf("unknown host: %q", got)
	}
}

func TestHostKeyErrorMessages(t *testing.T) {
	tests := []struct {
		err  HostKeyError
		want string
	}{
		{HostKeyError{Host: "[h]:1", KnownHosts: "/k", Presented: "SHA256:x"}, "host key for [h]:1 is not in /k"},
		{HostKeyError{Host: "[h]:1", KnownHosts: "/k", Presented: "SHA256:x", Changed: true, Known: "/k:3 ssh-ed25519"}, "host key for [h]:1 changed"},
		{HostKeyError{Host: "[h]:1", KnownHosts: "/k", Presented: "SHA256:x", Revoked: true}, "is revoked in /k"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); !strings.Contains(got, tt.want) || !strings.Contains(got, "SHA256:x") {
			t.Errorf("%q lacks %q", got, tt.want)
		}
	}
}

func TestJitter(t *testing.T) {
	for range 1000 {
		if j := jitter(time.Second); j < 500*time.Millisecond || j > time.Second {
			t.Fatalf("jitter(1s) = %v", j)
		}
	}
}

func TestCheckBuildID(t *testing.T) {
	for _, ok := range []string{"b1", "0af624a7-b398-40d2-a7c9-864cea087bb7", "x.y_z"} {
		if err := checkBuildID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "a b", strings.Repeat("a", 129), "é"} {
		if err := checkBuildID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := checkOutputName(".hidden"); err == nil {
		t.Error(".hidden accepted as output name")
	}
}

func TestLogChunkFor(t *testing.T) {
	if got := logChunkFor(0); got != maxLogChunk {
		t.Errorf("no limit: %d", got)
	}
	if got := logChunkFor(protocol.DefaultMaxLineBytes); got != maxLogChunk {
		t.Errorf("1 MiB: %d", got)
	}
	if got := logChunkFor(9216); got != 6144 {
		t.Errorf("9 KiB: %d", got)
	}
	if got := logChunkFor(10); got != 256 {
		t.Errorf("tiny: %d", got)
	}
}

// logSink collects Log messages; it can be switched to failing.
type logSink struct {
	mu   sync.Mutex
	msgs []*protocol.Log
	down bool
}

func (s *logSink) send(m protocol.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errNotConnected
	}
	l := *m.(*protocol.Log)
	l.Data = append([]byte(nil), l.Data...)
	s.msgs = append(s.msgs, &l)
	return nil
}

// reassemble applies chunks at their offsets, as a coordinator would.
func (s *logSink) reassemble() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for _, m := range s.msgs {
		if m.Offset > int64(len(b)) {
			continue
		}
		b = append(b[:m.Offset], m.Data...)
	}
	return string(b)
}

func TestLogStream(t *testing.T) {
	sink := &logSink{}
	l, err := newLogStream("b", filepath.Join(t.TempDir(), "log"), sink.send, func() int { return 4 })
	if err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("hello "))
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	sink.down = true
	sink.mu.Unlock()
	l.Write([]byte("world"))
	if err := l.Flush(); err == nil {
		t.Fatal("flush while down reported success")
	}
	sink.mu.Lock()
	sink.down = false
	sink.mu.Unlock()
	l.Rewind() // reconnect: replay from 0
	l.Write([]byte("!\n"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sink.reassemble(); got != "hello world!\n" {
		t.Fatalf("reassembled %q", got)
	}
	for _, m := range sink.msgs {
		if len(m.Data) > 4 || m.Build != "b" {
			t.Fatalf("chunk %+v", m)
		}
	}
	// Writes after Close are dropped, not errors.
	if n, err := l.Write([]byte("late")); n != 4 || err != nil {
		t.Fatalf("write after close: %d, %v", n, err)
	}
}

func TestLogStreamTruncates(t *testing.T) {
	sink := &logSink{}
	l, err := newLogStream("b", filepath.Join(t.TempDir(), "log"), sink.send, func() int { return 1024 })
	if err != nil {
		t.Fatal(err)
	}
	l.max = 10
	l.Write([]byte("0123456"))
	l.Write([]byte("789abcdef"))
	l.Write([]byte("more"))
	l.Close()
	if got := sink.reassemble(); !strings.HasPrefix(got, "0123456789\n[gbc agent: log truncated at 10 bytes]") || strings.Contains(got, "more") {
		t.Fatalf("got %q", got)
	}
}
