// Package narinfo parses, writes, signs and verifies binary-cache narinfo
// files in both flavours: Nix's (docs/formats.md §6, Ed25519 "Sig:" lines over a
// fingerprint) and Guix's (§7, an ECDSA signature over the raw bytes that
// precede "Signature:", with one URL/Compression/FileSize group per
// compression). It is pure.
package narinfo

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

// Bounds on hostile input. Real narinfos are well under 100 KiB even with
// thousands of references.
const (
	MaxSize       = 1 << 20
	MaxLineLen    = 512 << 10
	MaxReferences = 1 << 14
	MaxSigs       = 64
	MaxNars       = 16
)

// Flavour says which tool's conventions a narinfo follows.
type Flavour int

const (
	Nix Flavour = iota
	Guix
)

func (f Flavour) String() string {
	if f == Guix {
		return "guix"
	}
	return "nix"
}

// Nar is one downloadable file of the NAR. Guix lists several (one per
// compression); Nix has exactly one.
type Nar struct {
	URL         string
	Compression string
	FileSize    uint64 // 0 when unknown
}

// NarInfo is a parsed narinfo. References and Deriver are basenames, as in
// the file.
type NarInfo struct {
	Flavour     Flavour
	StorePath   string
	URL         string // first (or only) Nar, kept for Nix
	Compression string
	FileHash    nixhash.Hash // zero when absent (always for Guix)
	FileSize    uint64
	NarHash     nixhash.Hash
	NarSize     uint64
	References  []string
	Deriver     string
	System      string
	Sigs        []string // Nix "Sig:" values, "name:base64"
	CA          string

	// Guix only.
	Nars      []Nar
	Signature string // "1;host;base64(sexp)", the Signature: value
	// SignedBody holds the raw bytes preceding "Signature:" exactly as
	// received (or as signed by SignGuix); Guix signs those bytes, never a
	// re-rendering.
	SignedBody []byte
}

// Error names the line and field of a parse failure.
type Error struct {
	Line  int
	Field string
	Err   error
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("narinfo line %d: field %s: %v", e.Line, e.Field, e.Err)
	}
	return fmt.Sprintf("narinfo line %d: %v", e.Line, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// StoreDir returns the store directory of StorePath ("/nix/store").
func (n *NarInfo) StoreDir() string {
	i := strings.LastIndexByte(n.StorePath, '/')
	if i <= 0 {
		return ""
	}
	return n.StorePath[:i]
}

// Parse reads a narinfo of either flavour. Unknown fields are ignored, as
// Nix and Guix do; known fields are validated.
func Parse(b []byte) (*NarInfo, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("narinfo: %d bytes exceeds limit %d", len(b), MaxSize)
	}
	n := &NarInfo{}
	var (
		urls, comps []string
		sizes       []uint64
		seen        = map[string]int{}
		sigOffset   = -1
	)
	lineNo := 0
	for off := 0; off < len(b); {
		lineNo++
		end := bytes.IndexByte(b[off:], '\n')
		next := off + end + 1
		if end < 0 {
			end = len(b) - off // tolerate a missing final newline
			next = len(b)
		}
		line := b[off : off+end]
		lineStart := off
		off = next
		if len(line) > MaxLineLen {
			return nil, &Error{Line: lineNo, Err: fmt.Errorf("line of %d bytes exceeds limit %d", len(line), MaxLineLen)}
		}
		if len(line) == 0 {
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, &Error{Line: lineNo, Err: fmt.Errorf("want \"Key: value\", got %q", abbrev(string(line)))}
		}
		key := string(line[:colon])
		var value string
		switch rest := line[colon+1:]; {
		case len(rest) == 0:
		case rest[0] == ' ':
			value = string(rest[1:])
		default:
			return nil, &Error{Line: lineNo, Field: key, Err: errors.New("missing space after ':'")}
		}
		fe := func(err error) error { return &Error{Line: lineNo, Field: key, Err: err} }
		seen[key]++
		switch key {
		case "URL", "Compression", "FileSize", "Sig":
		default:
			if seen[key] > 1 && isKnown(key) {
				return nil, fe(errors.New("repeated"))
			}
		}
		switch key {
		case "StorePath":
			if err := checkStorePath(value); err != nil {
				return nil, fe(err)
			}
			n.StorePath = value
		case "URL":
			if value == "" {
				return nil, fe(errors.New("empty"))
			}
			urls = append(urls, value)
		case "Compression":
			comps = append(comps, value)
		case "FileHash":
			h, err := parseHash(value)
			if err != nil {
				return nil, fe(err)
			}
			n.FileHash = h
		case "FileSize":
			v, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return nil, fe(fmt.Errorf("not a size: %q", abbrev(value)))
			}
			sizes = append(sizes, v)
		case "NarHash":
			h, err := parseHash(value)
			if err != nil {
				return nil, fe(err)
			}
			n.NarHash = h
		case "NarSize":
			v, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return nil, fe(fmt.Errorf("not a size: %q", abbrev(value)))
			}
			n.NarSize = v
		case "References":
			refs := strings.Fields(value)
			if len(refs) > MaxReferences {
				return nil, fe(fmt.Errorf("%d references exceed limit %d", len(refs), MaxReferences))
			}
			for _, r := range refs {
				if err := checkBase(r); err != nil {
					return nil, fe(err)
				}
			}
			n.References = refs
		case "Deriver":
			if value != "" && value != "unknown-deriver" {
				if err := checkBase(value); err != nil {
					return nil, fe(err)
				}
			}
			n.Deriver = value
		case "System":
			n.System = value
		case "Sig":
			if len(n.Sigs) >= MaxSigs {
				return nil, fe(fmt.Errorf("more than %d signatures", MaxSigs))
			}
			if !strings.Contains(value, ":") {
				return nil, fe(errors.New("want name:base64"))
			}
			n.Sigs = append(n.Sigs, value)
		case "CA":
			n.CA = value
		case "Signature":
			if _, err := parseGuixSigField(value); err != nil {
				return nil, fe(err)
			}
			n.Signature = value
			sigOffset = lineStart
		}
	}
	lineNo++ // errors below refer to the end of the file
	if len(urls) > MaxNars || len(comps) > MaxNars || len(sizes) > MaxNars {
		return nil, &Error{Line: lineNo, Field: "URL", Err: fmt.Errorf("more than %d URL/Compression/FileSize entries", MaxNars)}
	}
	if sigOffset >= 0 || len(urls) > 1 {
		n.Flavour = Guix
	}
	if sigOffset >= 0 {
		// Guix hashes everything before the first occurrence of the text
		// "Signature:", wherever it is; refuse files where that is not the
		// field itself, since we would verify different bytes than Guix.
		if i := bytes.Index(b, []byte("Signature:")); i != sigOffset {
			return nil, &Error{Line: lineNo, Field: "Signature", Err: errors.New("text \"Signature:\" appears before the Signature field")}
		}
		n.SignedBody = append([]byte(nil), b[:sigOffset]...)
	}
	for i := range max(len(urls), len(comps), len(sizes)) {
		var nar Nar
		if i < len(urls) {
			nar.URL = urls[i]
		}
		if i < len(comps) {
			nar.Compression = comps[i]
		}
		if i < len(sizes) {
			nar.FileSize = sizes[i]
		}
		n.Nars = append(n.Nars, nar)
	}
	if len(n.Nars) > 0 {
		n.URL, n.Compression, n.FileSize = n.Nars[0].URL, n.Nars[0].Compression, n.Nars[0].FileSize
	}
	if n.Flavour == Nix {
		n.Nars = nil
		if n.Compression == "" {
			n.Compression = "bzip2" // Nix's default for a missing field
		}
	}
	switch {
	case n.StorePath == "":
		return nil, &Error{Line: lineNo, Field: "StorePath", Err: errors.New("missing")}
	case n.NarHash.IsZero():
		return nil, &Error{Line: lineNo, Field: "NarHash", Err: errors.New("missing")}
	case n.NarSize == 0:
		return nil, &Error{Line: lineNo, Field: "NarSize", Err: errors.New("missing or zero")}
	case n.URL == "":
		return nil, &Error{Line: lineNo, Field: "URL", Err: errors.New("missing")}
	}
	return n, nil
}

// parseHash wraps nixhash.Parse and re-checks the digest length, which
// nixhash does not do for every encoding (a 44-character base64 string
// decodes to 33 bytes).
func parseHash(v string) (nixhash.Hash, error) {
	h, err := nixhash.Parse(v)
	if err != nil {
		return nixhash.Hash{}, err
	}
	if len(h.Digest) != h.Algo.Size() {
		return nixhash.Hash{}, fmt.Errorf("%s digest %q decodes to %d bytes, want %d", h.Algo, abbrev(v), len(h.Digest), h.Algo.Size())
	}
	return h, nil
}

func isKnown(key string) bool {
	switch key {
	case "StorePath", "FileHash", "NarHash", "NarSize", "References", "Deriver", "System", "CA", "Signature":
		return true
	}
	return false
}

// checkStorePath checks the minimal shape /dir/<32 base32>-<name>; the
// storepath package does the full job, this only keeps garbage out of
// fingerprints.
func checkStorePath(p string) error {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || p[0] != '/' {
		return fmt.Errorf("store path %q is not absolute", abbrev(p))
	}
	return checkBase(p[i+1:])
}

const base32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

func checkBase(b string) error {
	if len(b) < 34 || b[32] != '-' {
		return fmt.Errorf("%q is not <hash>-<name>", abbrev(b))
	}
	for i := 0; i < 32; i++ {
		if !strings.ContainsRune(base32Chars, rune(b[i])) {
			return fmt.Errorf("%q: bad hash character %q", abbrev(b), b[i])
		}
	}
	name := b[33:]
	if len(name) > 211 || name[0] == '.' {
		return fmt.Errorf("%q: bad name", abbrev(b))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return fmt.Errorf("%q: bad name character %q", abbrev(b), c)
		}
	}
	return nil
}

func abbrev(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Fingerprint is the string Nix signs (docs/formats.md §6):
// 1;<path>;<narhash base32>;<narsize>;<sorted full reference paths>.
func (n *NarInfo) Fingerprint() ([]byte, error) {
	if n.NarHash.Algo != nixhash.SHA256 {
		return nil, fmt.Errorf("narinfo %s: fingerprint needs a sha256 NarHash, have %q", n.StorePath, n.NarHash.Algo)
	}
	if n.NarSize == 0 {
		return nil, fmt.Errorf("narinfo %s: fingerprint needs NarSize", n.StorePath)
	}
	if err := checkStorePath(n.StorePath); err != nil {
		return nil, fmt.Errorf("narinfo fingerprint: %w", err)
	}
	dir := n.StoreDir()
	refs := make([]string, len(n.References))
	for i, r := range n.References {
		refs[i] = dir + "/" + r
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	var b strings.Builder
	b.WriteString("1;")
	b.WriteString(n.StorePath)
	b.WriteString(";")
	b.WriteString(n.NarHash.String())
	b.WriteString(";")
	b.WriteString(strconv.FormatUint(n.NarSize, 10))
	b.WriteString(";")
	b.WriteString(strings.Join(refs, ","))
	return []byte(b.String()), nil
}

// SignNix adds (or replaces) the signature by key.
func (n *NarInfo) SignNix(key signing.NixSecretKey) error {
	fp, err := n.Fingerprint()
	if err != nil {
		return err
	}
	sig := key.Sign(fp)
	n.Sigs = slices.DeleteFunc(n.Sigs, func(s string) bool { return strings.HasPrefix(s, key.Name+":") })
	n.Sigs = append(n.Sigs, sig)
	return nil
}

// ErrNoValidSignature means no signature verified with the given keys.
var ErrNoValidSignature = errors.New("no valid signature by a trusted key")

// VerifyNix succeeds when at least one Sig verifies with one of keys.
func (n *NarInfo) VerifyNix(keys []signing.NixPublicKey) error {
	fp, err := n.Fingerprint()
	if err != nil {
		return err
	}
	for _, s := range n.Sigs {
		if signing.VerifyNix(s, fp, keys) {
			return nil
		}
	}
	names := make([]string, 0, len(n.Sigs))
	for _, s := range n.Sigs {
		names = append(names, s[:strings.IndexByte(s, ':')])
	}
	return fmt.Errorf("narinfo %s (signed by %v): %w", n.StorePath, names, ErrNoValidSignature)
}

// Bytes renders the narinfo in its flavour: Nix's field order (as
// NarInfo::to_string writes it), or Guix's layout with the NAR groups after
// the signature.
func (n *NarInfo) Bytes() []byte {
	if n.Flavour == Guix {
		return n.guixBytes()
	}
	var b bytes.Buffer
	field := func(k, v string) { b.WriteString(k + ": " + v + "\n") }
	field("StorePath", n.StorePath)
	field("URL", n.URL)
	comp := n.Compression
	if comp == "" {
		comp = "bzip2"
	}
	field("Compression", comp)
	if !n.FileHash.IsZero() {
		field("FileHash", n.FileHash.String())
	}
	if n.FileSize != 0 {
		field("FileSize", strconv.FormatUint(n.FileSize, 10))
	}
	field("NarHash", n.NarHash.String())
	field("NarSize", strconv.FormatUint(n.NarSize, 10))
	field("References", strings.Join(n.References, " "))
	if n.Deriver != "" {
		field("Deriver", n.Deriver)
	}
	if n.System != "" {
		field("System", n.System)
	}
	for _, s := range n.Sigs {
		field("Sig", s)
	}
	if n.CA != "" {
		field("CA", n.CA)
	}
	return b.Bytes()
}

// guixBody renders the part Guix signs, in guix publish's order.
func (n *NarInfo) guixBody() []byte {
	var b bytes.Buffer
	b.WriteString("StorePath: " + n.StorePath + "\n")
	b.WriteString("NarHash: " + n.NarHash.String() + "\n")
	b.WriteString("NarSize: " + strconv.FormatUint(n.NarSize, 10) + "\n")
	b.WriteString("References: " + strings.Join(n.References, " ") + "\n")
	if n.Deriver != "" {
		b.WriteString("Deriver: " + n.Deriver + "\n")
	}
	if n.System != "" {
		b.WriteString("System: " + n.System + "\n")
	}
	return b.Bytes()
}

func (n *NarInfo) nars() []Nar {
	if len(n.Nars) > 0 {
		return n.Nars
	}
	if n.URL != "" {
		return []Nar{{URL: n.URL, Compression: n.Compression, FileSize: n.FileSize}}
	}
	return nil
}

func (n *NarInfo) guixBytes() []byte {
	var b bytes.Buffer
	if n.Signature != "" && n.SignedBody != nil {
		b.Write(n.SignedBody)
		b.WriteString("Signature: " + n.Signature + "\n")
		if hasField(n.SignedBody, "URL") {
			// Older guix publish put the NAR groups in the signed part;
			// they are already written and cannot move without re-signing.
			return b.Bytes()
		}
	} else {
		b.Write(n.guixBody())
	}
	for _, nar := range n.nars() {
		b.WriteString("URL: " + nar.URL + "\n")
		comp := nar.Compression
		if comp == "" {
			comp = "none"
		}
		b.WriteString("Compression: " + comp + "\n")
		if nar.FileSize != 0 {
			b.WriteString("FileSize: " + strconv.FormatUint(nar.FileSize, 10) + "\n")
		}
	}
	return b.Bytes()
}

// SignGuix turns n into a Guix narinfo signed by key, as guix publish does:
// the body is rendered afresh, signed, and the NAR groups follow the
// signature so they can change without re-signing.
func (n *NarInfo) SignGuix(key signing.GuixSecretKey, hostname string) error {
	if strings.ContainsAny(hostname, ";\n") || hostname == "" {
		return fmt.Errorf("narinfo sign %s: bad hostname %q", n.StorePath, hostname)
	}
	if err := checkStorePath(n.StorePath); err != nil {
		return fmt.Errorf("narinfo sign: %w", err)
	}
	if n.NarHash.IsZero() || n.NarSize == 0 {
		return fmt.Errorf("narinfo sign %s: NarHash and NarSize are required", n.StorePath)
	}
	n.Nars = n.nars()
	n.Flavour = Guix
	body := n.guixBody()
	sig := key.SignGuix(body)
	n.SignedBody = body
	n.Signature = "1;" + hostname + ";" + base64.StdEncoding.EncodeToString(sig.Bytes())
	return nil
}

// parseGuixSigField splits "1;host;base64" and decodes the s-expression.
func parseGuixSigField(v string) (*signing.GuixSignature, error) {
	parts := strings.Split(v, ";")
	if len(parts) != 3 {
		return nil, fmt.Errorf("want 1;host;base64, got %d parts", len(parts))
	}
	if parts[0] != "1" {
		return nil, fmt.Errorf("unsupported signature version %q", abbrev(parts[0]))
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature base64: %w", err)
	}
	sig, err := signing.ParseGuixSignature(raw)
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// GuixSignature decodes the Signature field.
func (n *NarInfo) GuixSignature() (*signing.GuixSignature, error) {
	if n.Signature == "" {
		return nil, fmt.Errorf("narinfo %s: no Signature field", n.StorePath)
	}
	sig, err := parseGuixSigField(n.Signature)
	if err != nil {
		return nil, fmt.Errorf("narinfo %s: Signature: %w", n.StorePath, err)
	}
	return sig, nil
}

// VerifyGuix checks n's signature against acl the way a Guix client does:
// the signed part must contain StorePath, NarHash and References, and its
// sha256 must be signed by an authorised key.
func (n *NarInfo) VerifyGuix(acl *signing.ACL) error {
	sig, err := n.GuixSignature()
	if err != nil {
		return err
	}
	if !hasField(n.SignedBody, "StorePath") || !hasField(n.SignedBody, "NarHash") || !hasField(n.SignedBody, "References") {
		return fmt.Errorf("narinfo %s: StorePath, NarHash and References must precede Signature", n.StorePath)
	}
	if err := signing.VerifyGuix(n.SignedBody, sig, acl); err != nil {
		return fmt.Errorf("narinfo %s: %w", n.StorePath, err)
	}
	return nil
}

func hasField(body []byte, key string) bool {
	return bytes.HasPrefix(body, []byte(key+":")) || bytes.Contains(body, []byte("\n"+key+":"))
}

// VerifyGuix parses raw and verifies its Guix signature against acl.
func VerifyGuix(raw []byte, acl *signing.ACL) error {
	n, err := Parse(raw)
	if err != nil {
		return err
	}
	return n.VerifyGuix(acl)
}
