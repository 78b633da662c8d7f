package protocol

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	msgs := []Message{
		Hello{Header: Header{ID: 1}, ProtocolVersion: Version, Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 2, StoreDir: "/nix/store", Backend: "nix"},
		&Welcome{AgentID: "a", MaxLineBytes: 100},
		&Build{Build: "b", Derivation: "/nix/store/x.drv", Outputs: []OutputRef{{Name: "out", Path: "/nix/store/y"}}},
		&Log{Header: Header{ID: 3}, Build: "b", Offset: 10, Data: []byte("line\n\x00\xff")},
		&Succeeded{Header: Header{ID: 4}, Build: "b", Outputs: []OutputResult{{Name: "out", NarSize: 5}}},
		&UploadURL{Header: Header{ID: 5}, Build: "b", Upload: "out.nar.zst", Size: 7},
		&UploadTarget{Header: Header{ID: 5}, Build: "b", Upload: "out.nar.zst", URL: "http://s3/x", Direct: "t", ExpiresSeconds: 900},
		&Succeeded{Header: Header{ID: 6}, Build: "b", Outputs: []OutputResult{{Name: "out", Direct: "t"}}},
		Ack{Header: Header{ID: 4}},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, 0)
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, 0)
	for _, want := range msgs {
		got, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if got.MessageType() != want.MessageType() {
			t.Fatalf("got %s, want %s", got.MessageType(), want.MessageType())
		}
		if IDOf(got) != IDOf(want) {
			t.Fatalf("%s: id %d, want %d", got.MessageType(), IDOf(got), IDOf(want))
		}
	}
	if l, ok := msgs[3].(*Log); ok {
		_ = l
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after last message: %v, want EOF", err)
	}
}

func TestReaderRejectsAndContinues(t *testing.T) {
	long := `{"type":"heartbeat","x":"` + strings.Repeat("a", 50001) + `"}`
	input := strings.Join([]string{
		long,
		`not json`,
		`{"type":"launch-missiles","id":7}`,
		`{"id":8}`,
		`{"type":"started","id":9,"build":"b","bogus":1}`,
		// Nested past encoding/json's depth limit: malformed, not a stack
		// overflow (a 200,000-deep line fits a real reader's 1 MiB).
		`{"type":"heartbeat","id":11,"running":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
		`{"type":"started","id":10,"build":"b"}`,
	}, "\n") + "\n"
	r := NewReader(strings.NewReader(input), 50000)
	checks := []func(error) bool{
		func(err error) bool { return errors.Is(err, ErrLineTooLong) },
		func(err error) bool { var m *MalformedError; return errors.As(err, &m) },
		func(err error) bool { var u *UnknownTypeError; return errors.As(err, &u) && u.ID == 7 },
		func(err error) bool { var m *MalformedError; return errors.As(err, &m) && m.ID == 8 },
		func(err error) bool { var m *MalformedError; return errors.As(err, &m) && m.ID == 9 },
		func(err error) bool { var m *MalformedError; return errors.As(err, &m) },
	}
	for i, ok := range checks {
		_, err := r.Read()
		if err == nil || !ok(err) {
			t.Fatalf("line %d: unexpected error %v", i, err)
		}
	}
	m, err := r.Read()
	if err != nil {
		t.Fatalf("valid line after bad ones: %v", err)
	}
	if s, ok := m.(*Started); !ok || s.Build != "b" || s.ID != 10 {
		t.Fatalf("got %#v", m)
	}
}

func TestTruncatedLine(t *testing.T) {
	r := NewReader(strings.NewReader(`{"type":"ack","id":1}`), 0)
	if _, err := r.Read(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
}

func TestWriterRefusesOversize(t *testing.T) {
	w := NewWriter(io.Discard, 64)
	err := w.Write(&Log{Build: "b", Data: bytes.Repeat([]byte("x"), 100)})
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("got %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"hello","id":1,"protocol_version":1,"systems":["x86_64-linux"],"max_parallel_builds":1,"store_dir":"/nix/store","backend":"nix","hardware":{}}`))
	f.Add([]byte(`{"type":"log","build":"b","offset":0,"data":"aGVsbG8="}`))
	f.Add([]byte(`{"type":"succeeded","id":2,"build":"b","outputs":[{"name":"out","path":"/nix/store/x","nar_hash":"sha256:0","nar_size":1,"file_hash":"","file_size":1,"compression":"zstd","references":[],"upload":"out.nar.zst"}]}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := Decode(line)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := NewWriter(&buf, 1<<24).Write(m); err != nil {
			t.Fatalf("re-encode %T: %v", m, err)
		}
		m2, err := NewReader(&buf, 1<<24).Read()
		if err != nil {
			t.Fatalf("decode re-encoded %T: %v", m, err)
		}
		if m2.MessageType() != m.MessageType() {
			t.Fatalf("type changed %s -> %s", m.MessageType(), m2.MessageType())
		}
	})
}
