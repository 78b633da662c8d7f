package storedaemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// fuzzRWC serves a canned daemon output and swallows what the client
// sends.
type fuzzRWC struct{ io.Reader }

func (fuzzRWC) Write(p []byte) (int, error) { return len(p), nil }
func (fuzzRWC) Close() error                { return nil }

// daemonHello is what a daemon sends up to the end of the handshake.
func daemonHello(guix bool) []byte {
	var b bytes.Buffer
	w := &writer{w: bufio.NewWriter(&b)}
	w.int(workerMagic2)
	if guix {
		w.int(0x163)
	} else {
		w.int(0x122)
		w.string("2.8.0")
	}
	w.int(stderrLast)
	w.flush()
	return b.Bytes()
}

// FuzzDaemonReplies feeds arbitrary daemon replies to a connection after
// a valid handshake (first byte odd: Guix) and runs the operations the
// agent uses until the connection breaks. It must never panic, and every
// failure must be an *Error or a *ConnError.
func FuzzDaemonReplies(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1})
	for _, tr := range []string{"nix-2.8-session.txt", "guix-0x163-session.txt"} {
		var daemon bytes.Buffer
		for _, s := range parseTranscriptFile(f, tr) {
			if !s.client {
				daemon.Write(s.data)
			}
		}
		seed := daemon.Bytes()
		if tr == "nix-2.8-session.txt" {
			seed = append([]byte{0}, seed[len(daemonHello(false)):]...)
		} else {
			seed = append([]byte{1}, seed[len(daemonHello(true)):]...)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		guix := data[0]&1 == 1
		in := io.MultiReader(bytes.NewReader(daemonHello(guix)), bytes.NewReader(data[1:]))
		ctx := context.Background()
		c, err := Handshake(ctx, fuzzRWC{in}, nil)
		if err != nil {
			t.Fatalf("valid handshake refused: %v", err)
		}
		check := func(err error) bool {
			if err == nil {
				return true
			}
			var de *Error
			var ce *ConnError
			if !errors.As(err, &de) && !errors.As(err, &ce) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error of unexpected type %T: %v", err, err)
			}
			return c.Err() == nil
		}
		const p = "/nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi"
		for i := 0; i < 64; i++ {
			_, err := c.IsValidPath(ctx, p)
			if !check(err) {
				return
			}
			_, err = c.QueryPathInfo(ctx, p)
			if !check(err) {
				return
			}
			_, err = c.Build(ctx, p+".drv", []string{"out"}, BuildNormal, io.Discard)
			if !check(err) {
				return
			}
			_, err = c.ImportPaths(ctx, bytes.NewReader(make([]byte, 100)))
			if !check(err) {
				return
			}
			if !check(c.DeletePath(ctx, p)) || !check(c.SetOptions(ctx, Options{})) {
				return
			}
		}
	})
}
