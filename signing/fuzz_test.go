package signing

import (
	"bytes"
	"testing"
)

func FuzzParseSexp(f *testing.F) {
	// Seeds in testdata/fuzz/FuzzParseSexp: key files, ACL, signature.
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSexp(b)
		if err != nil {
			return
		}
		adv := s.Advanced()
		s2, err := ParseSexp(adv)
		if err != nil {
			t.Fatalf("advanced form %q does not re-parse: %v", adv, err)
		}
		if !s2.Equal(s) {
			t.Fatalf("advanced round trip changed %q", adv)
		}
		if !bytes.Equal(s2.Advanced(), adv) {
			t.Fatalf("printing is not stable")
		}
		s3, err := ParseSexp(s.Canonical())
		if err != nil || !s3.Equal(s) {
			t.Fatalf("canonical round trip: %v", err)
		}
		// Key/signature/ACL readers must not panic on anything that parses.
		ParseGuixPublicKey(b)
		ParseGuixSecretKey(b)
		ParseGuixSignature(b)
		ParseACL(b)
	})
}
