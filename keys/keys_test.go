package keys

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestHostKeyCreatedOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	s1, err := LoadOrCreateHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, HostKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("host key mode %v, want 0600", st.Mode().Perm())
	}
	s2, err := LoadOrCreateHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(s1.PublicKey()) != Fingerprint(s2.PublicKey()) {
		t.Fatal("host key changed across loads")
	}
	pub, err := ParseAuthorizedKeyFile(filepath.Join(dir, HostKeyFile+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	if pub.Fingerprint != Fingerprint(s1.PublicKey()) {
		t.Fatal(".pub does not match the private key")
	}
	if s1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("key type %s", s1.PublicKey().Type())
	}
	// ssh-keygen must agree on format and fingerprint when it is installed.
	if kg, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(kg, "-l", "-f", filepath.Join(dir, HostKeyFile)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -l: %v: %s", err, out)
		}
		if !strings.Contains(string(out), pub.Fingerprint) {
			t.Fatalf("ssh-keygen says %q, we say %s", out, pub.Fingerprint)
		}
	}
}

func TestParseAuthorizedKey(t *testing.T) {
	const good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host"
	tests := []struct {
		name, line, wantErr string
	}{
		{"good", good, ""},
		{"surrounding space", "  " + good + "\n", ""},
		{"empty", "", "empty"},
		{"garbage", "ssh-ed25519 !!!", "parse public key"},
		{"options", `command="x" ` + good, "options"},
		{"two lines", good + "\n" + good, "single line"},
		{"too long", "ssh-ed25519 " + strings.Repeat("A", MaxAuthorizedKeyLine), "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseAuthorizedKey(tt.line)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Comment != "user@host" || !strings.HasPrefix(k.Fingerprint, "SHA256:") || k.Line != good {
				t.Fatalf("got %+v", k)
			}
		})
	}
}
