package signing

import (
	"fmt"
)

// ACL is /etc/guix/acl: the keys whose signatures Guix accepts.
type ACL struct {
	Entries []ACLEntry
}

// ACLEntry is one (entry (public-key ...) (tag ...)). Key is nil for keys we
// cannot use (other algorithms); Raw keeps the entry so writing it back
// loses nothing.
type ACLEntry struct {
	Key *GuixPublicKey
	Raw Sexp
}

// NewACL authorises keys with Guix's usual (tag (guix import)).
func NewACL(keys ...GuixPublicKey) *ACL {
	a := &ACL{}
	for _, k := range keys {
		a.Add(k)
	}
	return a
}

// Add authorises k unless it already is, as `guix archive --authorize` does.
func (a *ACL) Add(k GuixPublicKey) {
	if a.Authorized(k) {
		return
	}
	kc := GuixPublicKey{Q: append([]byte(nil), k.Q...)}
	a.Entries = append(a.Entries, ACLEntry{
		Key: &kc,
		Raw: List(Tok("entry"), kc.Sexp(), List(Tok("tag"), List(Tok("guix"), Tok("import")))),
	})
}

// Authorized reports whether k is one of the ACL's keys.
func (a *ACL) Authorized(k GuixPublicKey) bool {
	for _, e := range a.Entries {
		if e.Key != nil && e.Key.Equal(k) {
			return true
		}
	}
	return false
}

// Bytes renders the ACL file.
func (a *ACL) Bytes() []byte {
	s := List(Tok("acl"))
	for _, e := range a.Entries {
		s.List = append(s.List, e.Raw)
	}
	return s.Advanced()
}

// ParseACL reads an ACL file. Entries with keys other than Ed25519 are kept
// but never authorise anything.
func ParseACL(b []byte) (*ACL, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return nil, fmt.Errorf("parse guix acl: %w", err)
	}
	if s.Head() != "acl" {
		return nil, fmt.Errorf("parse guix acl: top-level list is %q, want acl", s.Head())
	}
	a := &ACL{}
	for i, e := range s.List[1:] {
		if e.Head() != "entry" {
			return nil, fmt.Errorf("parse guix acl: element %d is %q, want entry", i+1, e.Head())
		}
		pk, ok := e.Child("public-key")
		if !ok {
			return nil, fmt.Errorf("parse guix acl: entry %d has no public-key", i+1)
		}
		ent := ACLEntry{Raw: e}
		if k, err := guixPublicKeyFromSexp(pk); err == nil {
			ent.Key = &k
		}
		a.Entries = append(a.Entries, ent)
	}
	return a, nil
}
