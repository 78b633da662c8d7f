package storedaemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A transcript is a conversation with a daemon, one message per line:
//
//	> …   what the client must send
//	< …   what the daemon answers
//
// followed by int N (a protocol int), str "Go-quoted string", strs "a" "b"
// (a count and strings), hex HEX (raw bytes) or blob NAME (a string
// whose bytes the test supplies). '#' starts a comment line. The fake
// daemon plays its side and fails the test on the first byte the client
// sends that the transcript does not expect.
type step struct {
	client bool
	data   []byte
	line   int
}

func parseTranscript(t *testing.T, name string, blobs map[string][]byte) []step {
	return parseTranscriptBlobs(t, name, blobs)
}

func parseTranscriptFile(t testing.TB, name string) []step {
	return parseTranscriptBlobs(t, name, map[string][]byte{"export": nil})
}

func parseTranscriptBlobs(t testing.TB, name string, blobs map[string][]byte) []step {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "transcripts", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []step
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		dir, rest, _ := strings.Cut(line, " ")
		if dir != ">" && dir != "<" {
			t.Fatalf("%s:%d: line must start with > or <", name, n)
		}
		kind, arg, _ := strings.Cut(strings.TrimSpace(rest), " ")
		var b bytes.Buffer
		w := &writer{w: bufio.NewWriter(&b)}
		switch kind {
		case "int":
			v, err := strconv.ParseUint(arg, 0, 64)
			if err != nil {
				t.Fatalf("%s:%d: %v", name, n, err)
			}
			w.int(v)
		case "str":
			s, err := strconv.Unquote(arg)
			if err != nil {
				t.Fatalf("%s:%d: %v", name, n, err)
			}
			w.string(s)
		case "strs":
			var ss []string
			for rest := strings.TrimSpace(arg); rest != ""; {
				q, err := strconv.QuotedPrefix(rest)
				if err != nil {
					t.Fatalf("%s:%d: %v", name, n, err)
				}
				s, _ := strconv.Unquote(q)
				ss = append(ss, s)
				rest = strings.TrimSpace(rest[len(q):])
			}
			w.strings(ss)
		case "hex":
			raw, err := hex.DecodeString(strings.ReplaceAll(arg, " ", ""))
			if err != nil {
				t.Fatalf("%s:%d: %v", name, n, err)
			}
			w.w.Write(raw)
		case "blob":
			blob, ok := blobs[arg]
			if !ok {
				t.Fatalf("%s:%d: no blob %q", name, n, arg)
			}
			w.bytes(blob)
		default:
			t.Fatalf("%s:%d: unknown kind %q", name, n, kind)
		}
		w.flush()
		steps = append(steps, step{client: dir == ">", data: b.Bytes(), line: n})
	}
	return steps
}

// pipeRWC joins the client's ends of two pipes.
type pipeRWC struct {
	io.Reader
	io.Writer
	closers []io.Closer
}

func (p *pipeRWC) Close() error {
	for _, c := range p.closers {
		c.Close()
	}
	return nil
}

// playDaemon runs the daemon's side of steps and returns the client's
// end and a channel with the daemon's verdict.
func playDaemon(name string, steps []step) (io.ReadWriteCloser, <-chan error) {
	cr, dw := io.Pipe() // daemon → client
	dr, cw := io.Pipe() // client → daemon
	done := make(chan error, 1)
	go func() {
		defer dw.Close()
		for _, s := range steps {
			if s.client {
				got := make([]byte, len(s.data))
				if _, err := io.ReadFull(dr, got); err != nil {
					done <- fmt.Errorf("%s:%d: client sent too little: %v (wanted %x)", name, s.line, err, s.data)
					return
				}
				if !bytes.Equal(got, s.data) {
					done <- fmt.Errorf("%s:%d: client sent %x, want %x", name, s.line, got, s.data)
					return
				}
				continue
			}
			if _, err := dw.Write(s.data); err != nil {
				done <- fmt.Errorf("%s:%d: write: %v", name, s.line, err)
				return
			}
		}
		done <- nil
	}()
	return &pipeRWC{Reader: cr, Writer: cw, closers: []io.Closer{cr, cw}}, done
}

func transcriptConn(t *testing.T, name string, blobs map[string][]byte) (*Conn, <-chan error) {
	t.Helper()
	rwc, done := playDaemon(name, parseTranscript(t, name, blobs))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Handshake(ctx, rwc, nil)
	if err != nil {
		t.Fatalf("handshake: %v (daemon: %v)", err, drain(done))
	}
	t.Cleanup(func() { c.Close() })
	return c, done
}

func drain(done <-chan error) error {
	select {
	case err := <-done:
		return err
	default:
		return nil
	}
}

func finish(t *testing.T, c *Conn, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("transcript not played to its end")
	}
	if err := c.Err(); err != nil {
		t.Fatalf("connection broken at the end: %v", err)
	}
}

// TestNixTranscript replays the bytes real nix-daemon 2.8 sent
// (docs/formats.md §8 and vectors/daemon/session1).
func TestNixTranscript(t *testing.T) {
	c, done := transcriptConn(t, "nix-2.8-session.txt", nil)
	ctx := context.Background()
	if c.Dialect() != Nix || c.ProtocolVersion() != 0x122 || c.DaemonVersion() != "2.8.0" {
		t.Fatalf("dialect %v version %#x daemon %q", c.Dialect(), c.ProtocolVersion(), c.DaemonVersion())
	}
	_, err := c.IsValidPath(ctx, "/tmp/not-a-store-path")
	de, ok := err.(*Error)
	if !ok || de.Message != "path '/tmp/not-a-store-path' is not in the Nix store" || de.Status != 0 {
		t.Fatalf("IsValidPath error: %#v", err)
	}
	info, err := c.QueryPathInfo(ctx, "/nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi")
	if err != nil {
		t.Fatal(err)
	}
	if info.NarSize != 168 || info.NarHash.Hex() != "fefc22a0d549adfac53493cf8c2a0a834ca489d10b340d8e676a369213a4ebc2" ||
		len(info.References) != 1 || !info.Ultimate || info.Deriver != "/nix/store/8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv" {
		t.Fatalf("QueryPathInfo = %+v", info)
	}
	var log bytes.Buffer
	res, err := c.Build(ctx, "/nix/store/zsl6jf6iv6jvmb1dmr470xmahp7p8298-wire-bd.drv", []string{"out"}, BuildNormal, &log)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != PermanentFailure || res.ErrorMsg == "" || res.Stop.Unix() != 1795816472 {
		t.Fatalf("Build = %+v", res)
	}
	if log.String() != "building-wire-bd\nto-stderr\n" {
		t.Fatalf("build log %q", log.String())
	}
	finish(t, c, done)
}

// TestGuixTranscript replays a guix-daemon (protocol 0x163) session
// written from Guix's nix/nix-daemon/nix-daemon.cc and
// nix/libstore/worker-protocol.hh; no real guix-daemon was involved.
func TestGuixTranscript(t *testing.T) {
	var stream bytes.Buffer
	narBytes, err := os.ReadFile(filepath.Join("testdata", "file.txt.nar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteExport(&stream, []ExportRecord{{Path: "/gnu/store/0000000000000000000000000000000a-a", NAR: bytes.NewReader(narBytes)}},
		func(sum [32]byte) ([]byte, error) {
			return []byte("(signature " + hex.EncodeToString(sum[:]) + ")"), nil
		}); err != nil {
		t.Fatal(err)
	}
	c, done := transcriptConn(t, "guix-0x163-session.txt", map[string][]byte{"export": stream.Bytes()})
	ctx := context.Background()
	if c.Dialect() != Guix || c.ProtocolVersion() != 0x163 || c.DaemonVersion() != "" {
		t.Fatalf("dialect %v version %#x daemon %q", c.Dialect(), c.ProtocolVersion(), c.DaemonVersion())
	}
	if err := c.SetOptions(ctx, Options{Timeout: 90 * time.Second, MaxSilentTime: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	const a = "/gnu/store/0000000000000000000000000000000a-a"
	if ok, err := c.IsValidPath(ctx, a); err != nil || ok {
		t.Fatalf("IsValidPath = %v, %v", ok, err)
	}
	paths, err := c.ImportPaths(ctx, bytes.NewReader(stream.Bytes()))
	if err != nil || len(paths) != 1 || paths[0] != a {
		t.Fatalf("ImportPaths = %v, %v", paths, err)
	}
	if info, err := c.QueryPathInfo(ctx, a); err != nil || info == nil || info.NarSize != 120 || info.Deriver != "" || len(info.References) != 0 {
		t.Fatalf("QueryPathInfo = %+v, %v", info, err)
	}
	if info, err := c.QueryPathInfo(ctx, a+"-missing"); err != nil || info != nil {
		t.Fatalf("QueryPathInfo(invalid) = %+v, %v", info, err)
	}
	if err := c.AddTempRoot(ctx, a); err != nil {
		t.Fatal(err)
	}
	const drv = "/gnu/store/0000000000000000000000000000000b-b.drv"
	var log bytes.Buffer
	for _, want := range []BuildStatus{Built, PermanentFailure, TimedOut, OutputRejected, MiscFailure} {
		res, err := c.Build(ctx, drv, []string{"out"}, BuildNormal, &log)
		if err != nil || res.Status != want {
			t.Fatalf("Build = %+v, %v; want %v", res, err, want)
		}
	}
	if log.String() != "building b\nb failed\n" {
		t.Fatalf("log %q", log.String())
	}
	if err := c.AddToStoreNar(ctx, &PathInfo{Path: a}, nil, false); err == nil {
		t.Fatal("AddToStoreNar on guix-daemon: no error")
	}
	if err := c.DeletePath(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePath(ctx, a); err == nil {
		t.Fatal("DeletePath of an alive path: no error")
	} else if de, ok := err.(*Error); !ok || de.Status != 1 {
		t.Fatalf("DeletePath error %#v, want *Error with status 1", err)
	}
	finish(t, c, done)
}

// TestHandshakeRefusals: wrong magic, wrong major version, a Nix that is
// too old, and a store that does not open.
func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct{ name, transcript string }{
		{"magic", "bad-magic.txt"},
		{"major", "bad-major.txt"},
		{"old nix", "old-nix.txt"},
		{"store error", "guix-store-error.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rwc, done := playDaemon(tc.transcript, parseTranscript(t, tc.transcript, nil))
			_, err := Handshake(context.Background(), rwc, nil)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if derr := <-done; derr != nil {
				t.Fatal(derr)
			}
			t.Log(err)
		})
	}
}

// TestBounds: lengths beyond the limits are refused before allocating.
func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(r *reader) error
		in   []byte
	}{
		{"string", func(r *reader) error { _, err := r.string("s"); return err }, le(MaxString + 1)},
		{"huge string", func(r *reader) error { _, err := r.string("s"); return err }, le(1 << 62)},
		{"list", func(r *reader) error { _, err := r.strings("l"); return err }, le(MaxList + 1)},
		{"padding", func(r *reader) error { _, err := r.string("s"); return err }, append(le(1), 'x', 1, 0, 0, 0, 0, 0, 0)},
		{"bool", func(r *reader) error { _, err := r.bool("b"); return err }, le(2)},
		{"short", func(r *reader) error { _, err := r.int("i"); return err }, []byte{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &reader{r: bufio.NewReader(bytes.NewReader(tc.in))}
			if err := tc.read(r); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func le(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"unix:/nix/var/nix/daemon-socket/socket": "unix:/nix/var/nix/daemon-socket/socket",
		"exec:nix-daemon --stdio":                "exec:nix-daemon --stdio",
		"exec:'/opt/my daemon' --stdio":          "exec:/opt/my daemon --stdio",
	} {
		a, err := ParseAddress(in)
		if err != nil || a.String() != want {
			t.Errorf("ParseAddress(%q) = %v, %v; want %s", in, a, err, want)
		}
	}
	for _, in := range []string{"", "/path", "unix:", "unix:relative", "exec:", "exec:  ", "tcp:1.2.3.4:5", "exec:'open"} {
		if a, err := ParseAddress(in); err == nil {
			t.Errorf("ParseAddress(%q) = %v; want an error", in, a)
		}
	}
}

func TestPlain(t *testing.T) {
	for in, want := range map[string]string{
		"":                               "",
		"no escapes":                     "no escapes",
		"\x1b[31;1merror:\x1b[0m failed": "error: failed",
		"cut \x1b[35":                    "cut ",
		"lone \x1b here":                 "lone \x1b here",
	} {
		if got := plain(in); got != want {
			t.Errorf("plain(%q) = %q; want %q", in, got, want)
		}
	}
}
