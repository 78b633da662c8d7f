package storedaemon

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/gbc-farm/gbc/signing"
)

// TestWriteExportGuixSignature: each record is signed over the bytes
// guix-daemon hashes (FORMATS.md §3: from the NAR through the deriver),
// with a signature its ACL check accepts.
func TestWriteExportGuixSignature(t *testing.T) {
	narBytes, err := os.ReadFile(filepath.Join("testdata", "file.txt.nar"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := signing.GenerateGuixKey()
	if err != nil {
		t.Fatal(err)
	}
	const p = "/gnu/store/0000000000000000000000000000000a-a"
	refs := []string{"/gnu/store/0000000000000000000000000000000b-b"}
	var out bytes.Buffer
	err = WriteExport(&out, []ExportRecord{{Path: p, References: refs, Deriver: "/gnu/store/0000000000000000000000000000000c-a.drv", NAR: bytes.NewReader(narBytes)}},
		func(sum [32]byte) ([]byte, error) { return key.SignGuixHash(sum).Bytes(), nil })
	if err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	if binary.LittleEndian.Uint64(b) != 1 {
		t.Fatal("stream does not start with a record")
	}
	// The hashed part: NAR, magic, path, references, deriver.
	r := &reader{r: bufioReader(b[8+len(narBytes):])}
	magic, _ := r.int("magic")
	path, _ := r.string("path")
	gotRefs, _ := r.strings("refs")
	deriver, _ := r.string("deriver")
	if magic != exportMagic || path != p || len(gotRefs) != 1 || gotRefs[0] != refs[0] || deriver == "" {
		t.Fatalf("record: magic %#x path %q refs %v deriver %q", magic, path, gotRefs, deriver)
	}
	hashedEnd := len(b) - r.r.Buffered()
	if flag, _ := r.int("signature flag"); flag != 1 {
		t.Fatalf("signature flag %d", flag)
	}
	sigText, err := r.bytes("signature", MaxString)
	if err != nil {
		t.Fatal(err)
	}
	if end, _ := r.int("end"); end != 0 {
		t.Fatalf("stream end %d", end)
	}
	sig, err := signing.ParseGuixSignature(sigText)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b[8:hashedEnd])
	if err := signing.VerifyGuixHash(sum, sig, signing.NewACL(key.Public())); err != nil {
		t.Fatalf("guix-daemon's check: %v", err)
	}
	other, _ := signing.GenerateGuixKey()
	if err := signing.VerifyGuixHash(sum, sig, signing.NewACL(other.Public())); err == nil {
		t.Fatal("a key outside the ACL was accepted")
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
