package keys

import (
	"strings"
	"testing"
)

// FuzzParseAuthorizedKey: a parsed key re-parses to the same fingerprint
// from its canonical line.
func FuzzParseAuthorizedKey(f *testing.F) {
	f.Add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host")
	f.Add(`command="x" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl`)
	f.Add("ssh-rsa AAAA")
	f.Fuzz(func(t *testing.T, line string) {
		k, err := ParseAuthorizedKey(line)
		if err != nil {
			return
		}
		k2, err := ParseAuthorizedKey(k.Line)
		if err != nil {
			t.Fatalf("canonical line %q does not parse: %v", k.Line, err)
		}
		if k2.Fingerprint != k.Fingerprint || !strings.HasPrefix(k.Fingerprint, "SHA256:") {
			t.Fatalf("fingerprint changed: %s vs %s", k.Fingerprint, k2.Fingerprint)
		}
	})
}
