package signing

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// curveOrder is n, the order of the Ed25519 base point.
var curveOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

const (
	// guixCurve is the only curve Guix uses for substitute keys.
	guixCurve = "Ed25519"
	// qbits is the bit length of n; hashes are truncated to it (e = h >> 3).
	qbits = 253
)

// GuixPublicKey is an ECDSA key on the Ed25519 curve: Q is the standard
// 32-byte compressed point, as libgcrypt stores it in (q #..#).
type GuixPublicKey struct {
	Q []byte
}

// GuixSecretKey is the matching private key. D is kept as libgcrypt
// generated it (clamped, larger than n) so the file round-trips exactly.
type GuixSecretKey struct {
	Q []byte
	D *big.Int
}

// Sexp returns (public-key (ecc (curve Ed25519) (q #..#))).
func (k GuixPublicKey) Sexp() Sexp {
	return List(Tok("public-key"), List(Tok("ecc"), List(Tok("curve"), Tok(guixCurve)), List(Tok("q"), Atom(k.Q))))
}

// Bytes is the signing-key.pub file content in libgcrypt's advanced format.
func (k GuixPublicKey) Bytes() []byte { return k.Sexp().Advanced() }

// Equal compares the key bytes, which is what Guix's ACL check amounts to.
func (k GuixPublicKey) Equal(o GuixPublicKey) bool { return bytes.Equal(k.Q, o.Q) }

// Public returns the public half.
func (k GuixSecretKey) Public() GuixPublicKey { return GuixPublicKey{Q: append([]byte(nil), k.Q...)} }

// Sexp returns (private-key (ecc (curve Ed25519) (q #..#) (d #..#))).
func (k GuixSecretKey) Sexp() Sexp {
	return List(Tok("private-key"), List(Tok("ecc"), List(Tok("curve"), Tok(guixCurve)),
		List(Tok("q"), Atom(k.Q)), List(Tok("d"), Atom(k.D.Bytes()))))
}

// Bytes is the signing-key.sec file content.
func (k GuixSecretKey) Bytes() []byte { return k.Sexp().Advanced() }

// ParseGuixPublicKey reads a (public-key (ecc (curve Ed25519) (q #..#))) file.
func ParseGuixPublicKey(b []byte) (GuixPublicKey, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return GuixPublicKey{}, fmt.Errorf("parse guix public key: %w", err)
	}
	return guixPublicKeyFromSexp(s)
}

func guixPublicKeyFromSexp(s Sexp) (GuixPublicKey, error) {
	if s.Head() != "public-key" {
		return GuixPublicKey{}, fmt.Errorf("parse guix public key: top-level list is %q, want public-key", s.Head())
	}
	q, err := eccParams(s, "public-key")
	if err != nil {
		return GuixPublicKey{}, err
	}
	return GuixPublicKey{Q: q}, nil
}

// eccParams checks the (ecc (curve Ed25519) (q ..)) part shared by both key
// kinds and returns q, rejecting the EdDSA flavour whose signatures follow
// different rules.
func eccParams(s Sexp, what string) ([]byte, error) {
	ecc, ok := s.Child("ecc")
	if !ok {
		return nil, fmt.Errorf("parse guix %s: no (ecc ...) element", what)
	}
	curve, ok := ecc.Child("curve")
	cv, _ := curve.Value()
	if !ok || string(cv) != guixCurve {
		return nil, fmt.Errorf("parse guix %s: curve %q, want %s", what, cv, guixCurve)
	}
	if flags, ok := ecc.Child("flags"); ok {
		for _, f := range flags.List[1:] {
			if !f.IsList && string(f.Atom) == "eddsa" {
				return nil, fmt.Errorf("parse guix %s: EdDSA keys are not Guix substitute keys", what)
			}
		}
	}
	qs, ok := ecc.Child("q")
	q, _ := qs.Value()
	if !ok || len(q) != 32 {
		return nil, fmt.Errorf("parse guix %s: q must be a 32-byte point, got %d bytes", what, len(q))
	}
	if _, err := new(edwards25519.Point).SetBytes(q); err != nil {
		return nil, fmt.Errorf("parse guix %s: q is not a curve point: %w", what, err)
	}
	return append([]byte(nil), q...), nil
}

// ParseGuixSecretKey reads a (private-key (ecc ... (q #..#) (d #..#))) file
// and checks q = d·B so a corrupted file cannot produce unverifiable
// signatures.
func ParseGuixSecretKey(b []byte) (GuixSecretKey, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return GuixSecretKey{}, fmt.Errorf("parse guix secret key: %w", err)
	}
	if s.Head() != "private-key" {
		return GuixSecretKey{}, fmt.Errorf("parse guix secret key: top-level list is %q, want private-key", s.Head())
	}
	q, err := eccParams(s, "secret key")
	if err != nil {
		return GuixSecretKey{}, err
	}
	ds, ok := s.Path("ecc", "d")
	d, _ := ds.Value()
	if !ok || len(d) == 0 || len(d) > 64 {
		return GuixSecretKey{}, fmt.Errorf("parse guix secret key: missing or oversized (d ...)")
	}
	k := GuixSecretKey{Q: q, D: new(big.Int).SetBytes(d)}
	if new(big.Int).Mod(k.D, curveOrder).Sign() == 0 {
		return GuixSecretKey{}, fmt.Errorf("parse guix secret key: d is zero mod n")
	}
	if !bytes.Equal(pointFromScalar(k.D).Bytes(), q) {
		return GuixSecretKey{}, fmt.Errorf("parse guix secret key: q does not match d")
	}
	return k, nil
}

// GenerateGuixKey makes a key as libgcrypt's (genkey (ecdsa (curve Ed25519)))
// does: a clamped 32-byte d and q = d·B.
func GenerateGuixKey() (GuixSecretKey, error) {
	var buf [32]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return GuixSecretKey{}, fmt.Errorf("generate guix key: %w", err)
	}
	buf[0] = buf[0]&0x7f | 0x40
	buf[31] &= 0xf8
	d := new(big.Int).SetBytes(buf[:])
	return GuixSecretKey{Q: pointFromScalar(d).Bytes(), D: d}, nil
}

// scalar converts a non-negative integer to an edwards25519 scalar mod n.
func scalar(x *big.Int) *edwards25519.Scalar {
	var le [64]byte
	xb := new(big.Int).Mod(x, curveOrder).Bytes()
	for i, c := range xb {
		le[len(xb)-1-i] = c
	}
	s, err := edwards25519.NewScalar().SetUniformBytes(le[:])
	if err != nil {
		panic("signing: 64-byte scalar rejected: " + err.Error()) // cannot happen: length is fixed
	}
	return s
}

func pointFromScalar(d *big.Int) *edwards25519.Point {
	return new(edwards25519.Point).ScalarBaseMult(scalar(d))
}

// affineX returns the affine Edwards x coordinate of p as an integer.
func affineX(p *edwards25519.Point) *big.Int {
	X, _, Z, _ := p.ExtendedCoordinates()
	x := new(field.Element).Multiply(X, new(field.Element).Invert(Z))
	le := x.Bytes()
	be := make([]byte, len(le))
	for i, c := range le {
		be[len(le)-1-i] = c
	}
	return new(big.Int).SetBytes(be)
}

// hashToInt truncates a digest to the bit length of n (libgcrypt's
// _gcry_dsa_normalize_hash); for SHA-256 that is e = h >> 3.
func hashToInt(h []byte) *big.Int {
	e := new(big.Int).SetBytes(h)
	if n := len(h) * 8; n > qbits {
		e.Rsh(e, uint(n-qbits))
	}
	return e
}

// ecdsaVerify checks an ECDSA signature over the Ed25519 curve (docs/formats.md §7).
func ecdsaVerify(q []byte, hash []byte, r, s *big.Int) bool {
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(curveOrder) >= 0 || s.Cmp(curveOrder) >= 0 {
		return false
	}
	Q, err := new(edwards25519.Point).SetBytes(q)
	if err != nil {
		return false
	}
	w := new(big.Int).ModInverse(s, curveOrder)
	u1 := new(big.Int).Mul(hashToInt(hash), w)
	u2 := new(big.Int).Mul(r, w)
	X := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(scalar(u2), Q, scalar(u1))
	if X.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return false
	}
	return new(big.Int).Mod(affineX(X), curveOrder).Cmp(r) == 0
}

// ecdsaSign signs with an RFC 6979 nonce computed as libgcrypt does, so a
// signature made here equals the one Guix would make with the same key.
func ecdsaSign(d *big.Int, hash []byte) (r, s *big.Int) {
	e := hashToInt(hash)
	k := newRFC6979(d, hash)
	for {
		kk := k.next()
		R := pointFromScalar(kk)
		r = new(big.Int).Mod(affineX(R), curveOrder)
		if r.Sign() == 0 {
			continue
		}
		s = new(big.Int).Mul(d, r)
		s.Add(s, e)
		s.Mul(s, new(big.Int).ModInverse(kk, curveOrder))
		s.Mod(s, curveOrder)
		if s.Sign() == 0 {
			continue
		}
		return r, s
	}
}

// rfc6979 is the HMAC-SHA256 nonce generator of RFC 6979 §3.2 with
// libgcrypt's choices: x is d as stored (not reduced), h1 is bits2octets.
type rfc6979 struct {
	k, v []byte
}

func int2octets(x *big.Int, n int) []byte {
	out := make([]byte, n)
	b := x.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	copy(out[n-len(b):], b)
	return out
}

func newRFC6979(d *big.Int, hash []byte) *rfc6979 {
	rolen := (qbits + 7) / 8
	z := hashToInt(hash)
	if z.Cmp(curveOrder) >= 0 {
		z.Sub(z, curveOrder)
	}
	x := int2octets(d, rolen)
	h1 := int2octets(z, rolen)
	g := &rfc6979{k: make([]byte, sha256.Size), v: bytes.Repeat([]byte{1}, sha256.Size)}
	g.k = g.mac(g.v, []byte{0}, x, h1)
	g.v = g.mac(g.v)
	g.k = g.mac(g.v, []byte{1}, x, h1)
	g.v = g.mac(g.v)
	return g
}

func (g *rfc6979) mac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, g.k)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// next returns the next candidate nonce in [1, n-1].
func (g *rfc6979) next() *big.Int {
	for {
		var t []byte
		for len(t)*8 < qbits {
			g.v = g.mac(g.v)
			t = append(t, g.v...)
		}
		k := new(big.Int).SetBytes(t)
		if n := len(t) * 8; n > qbits {
			k.Rsh(k, uint(n-qbits))
		}
		ok := k.Sign() > 0 && k.Cmp(curveOrder) < 0
		// Advance the state either way: a rejected k must not repeat, and
		// after an accepted one the caller may ask for another (r or s = 0).
		g.k = g.mac(g.v, []byte{0})
		g.v = g.mac(g.v)
		if ok {
			return k
		}
	}
}

// GuixSignature is the decoded s-expression in a Guix narinfo Signature:
// line or an archive record.
type GuixSignature struct {
	Hash []byte // sha256 of the signed bytes, from (data (hash sha256 #..#))
	R, S *big.Int
	Key  GuixPublicKey
}

// Sexp renders (signature (data ...) (sig-val (ecdsa (r ..) (s ..))) (public-key ...)).
func (g *GuixSignature) Sexp() Sexp {
	return List(Tok("signature"),
		List(Tok("data"), List(Tok("flags"), Tok("rfc6979")), List(Tok("hash"), Tok("sha256"), Atom(g.Hash))),
		List(Tok("sig-val"), List(Tok("ecdsa"), List(Tok("r"), Atom(g.R.Bytes())), List(Tok("s"), Atom(g.S.Bytes())))),
		g.Key.Sexp())
}

// Bytes is the advanced-format text Guix base64-encodes into narinfos.
func (g *GuixSignature) Bytes() []byte { return g.Sexp().Advanced() }

// ParseGuixSignature decodes the signature s-expression.
func ParseGuixSignature(b []byte) (*GuixSignature, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return nil, fmt.Errorf("parse guix signature: %w", err)
	}
	if s.Head() != "signature" {
		return nil, fmt.Errorf("parse guix signature: top-level list is %q, want signature", s.Head())
	}
	hs, ok := s.Path("data", "hash")
	if !ok || len(hs.List) != 3 || hs.List[1].IsList || hs.List[2].IsList {
		return nil, errors.New("parse guix signature: missing (data (hash sha256 #..#))")
	}
	if algo := string(hs.List[1].Atom); algo != "sha256" {
		return nil, fmt.Errorf("parse guix signature: hash algorithm %q, want sha256", algo)
	}
	g := &GuixSignature{Hash: append([]byte(nil), hs.List[2].Atom...)}
	if len(g.Hash) != sha256.Size {
		return nil, fmt.Errorf("parse guix signature: hash is %d bytes, want %d", len(g.Hash), sha256.Size)
	}
	for _, f := range []struct {
		name string
		dst  **big.Int
	}{{"r", &g.R}, {"s", &g.S}} {
		v, ok := s.Path("sig-val", "ecdsa", f.name)
		b, _ := v.Value()
		if !ok || len(b) == 0 || len(b) > 64 {
			return nil, fmt.Errorf("parse guix signature: missing or oversized (sig-val (ecdsa (%s ..)))", f.name)
		}
		*f.dst = new(big.Int).SetBytes(b)
	}
	pk, ok := s.Child("public-key")
	if !ok {
		return nil, errors.New("parse guix signature: missing (public-key ...)")
	}
	if g.Key, err = guixPublicKeyFromSexp(pk); err != nil {
		return nil, fmt.Errorf("parse guix signature: %w", err)
	}
	return g, nil
}

// SignGuixHash signs a SHA-256 digest and embeds the public key, as Guix's
// signature-sexp does.
func (k GuixSecretKey) SignGuixHash(hash [sha256.Size]byte) *GuixSignature {
	r, s := ecdsaSign(k.D, hash[:])
	return &GuixSignature{Hash: append([]byte(nil), hash[:]...), R: r, S: s, Key: k.Public()}
}

// SignGuix signs sha256(data).
func (k GuixSecretKey) SignGuix(data []byte) *GuixSignature {
	return k.SignGuixHash(sha256.Sum256(data))
}

// VerifyMath checks only the ECDSA equation against the embedded key and hash.
func (g *GuixSignature) VerifyMath() bool {
	return ecdsaVerify(g.Key.Q, g.Hash, g.R, g.S)
}

// Errors from VerifyGuix, in the order Guix checks them.
var (
	ErrUnauthorizedKey = errors.New("signing key is not authorised")
	ErrCorruptSig      = errors.New("signed hash does not match the data")
	ErrInvalidSig      = errors.New("invalid signature")
)

// VerifyGuix checks that sig signs sha256(data), that the equation holds and
// that the embedded key is in acl — the same three checks as Guix's
// signature-verification-result.
func VerifyGuix(data []byte, sig *GuixSignature, acl *ACL) error {
	return VerifyGuixHash(sha256.Sum256(data), sig, acl)
}

// VerifyGuixHash is VerifyGuix for callers that hashed the data themselves
// while streaming it (archive records).
func VerifyGuixHash(hash [sha256.Size]byte, sig *GuixSignature, acl *ACL) error {
	if acl == nil || !acl.Authorized(sig.Key) {
		return fmt.Errorf("guix signature by key %X: %w", sig.Key.Q, ErrUnauthorizedKey)
	}
	if !bytes.Equal(hash[:], sig.Hash) {
		return fmt.Errorf("guix signature: %w (signed %X, data %X)", ErrCorruptSig, sig.Hash, hash)
	}
	if !sig.VerifyMath() {
		return fmt.Errorf("guix signature by key %X: %w", sig.Key.Q, ErrInvalidSig)
	}
	return nil
}
