package scheduler

import (
	"bytes"
	"hash/maphash"
	"strings"
)

// Build ids that are UUIDs in the canonical lowercase form the coordinator
// makes (uuid.NewString) are kept inline in the build record as 16 bytes:
// as strings they were a 48-byte allocation per queued build, about a
// sixth of the queue's heap at a million builds, interleaved with the
// start-up rebuild's garbage. Any other id is kept as given, in
// Scheduler.oddIDs. Both forms order as their strings do.

// parseUUID accepts only the canonical form (8-4-4-4-12 lowercase hex),
// so that formatting the bytes gives the id back exactly.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := lowerHex(s[i])
		lo, ok2 := lowerHex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		i, j = i+2, j+1
	}
	return u, true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func appendUUID(dst []byte, u [16]byte) []byte {
	const hex = "0123456789abcdef"
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[b>>4], hex[b&15])
	}
	return dst
}

// setID records id for slot i.
func (s *Scheduler) setID(i int32, id string) {
	b := &s.builds[i]
	if u, ok := parseUUID(id); ok {
		b.uid, b.oddID = u, false
		return
	}
	b.uid, b.oddID = [16]byte{}, true
	if s.oddIDs == nil {
		s.oddIDs = map[int32]string{}
	}
	s.oddIDs[i] = strings.Clone(id) // don't pin a caller's larger buffer
}

// clearID forgets slot i's id.
func (s *Scheduler) clearID(i int32) {
	if s.builds[i].oddID {
		delete(s.oddIDs, i)
	}
}

// idOf returns slot i's id (for a UUID, a new string).
func (s *Scheduler) idOf(i int32) string {
	b := &s.builds[i]
	if b.oddID {
		return s.oddIDs[i]
	}
	var buf [36]byte
	return string(appendUUID(buf[:0], b.uid))
}

func (s *Scheduler) appendID(dst []byte, i int32) []byte {
	if b := &s.builds[i]; !b.oddID {
		return appendUUID(dst, b.uid)
	}
	return append(dst, s.oddIDs[i]...)
}

// idLess orders two slots by id as strings.
func (s *Scheduler) idLess(a, b int32) bool {
	x, y := &s.builds[a], &s.builds[b]
	if !x.oddID && !y.oddID {
		return bytes.Compare(x.uid[:], y.uid[:]) < 0
	}
	var bx, by [64]byte
	return bytes.Compare(s.appendID(bx[:0], a), s.appendID(by[:0], b)) < 0
}

// hashID is slot i's hash in byID.
func (s *Scheduler) hashID(i int32) uint64 {
	if b := &s.builds[i]; !b.oddID {
		return maphash.Bytes(s.byID.seed, b.uid[:])
	}
	return maphash.String(s.byID.seed, s.oddIDs[i])
}

// lookupID finds the live build with this id.
func (s *Scheduler) lookupID(id string) (int32, bool) {
	if u, ok := parseUUID(id); ok {
		return s.byID.find(maphash.Bytes(s.byID.seed, u[:]), func(v int32) bool {
			b := &s.builds[v]
			return !b.oddID && b.uid == u
		})
	}
	return s.byID.find(maphash.String(s.byID.seed, id), func(v int32) bool {
		return s.builds[v].oddID && s.oddIDs[v] == id
	})
}

// arenaChunk is the size of the blocks strArena packs strings into.
const arenaChunk = 64 << 10

// strArena packs strings that live as long as the Scheduler (derivation
// paths are never forgotten) into shared blocks: no per-string size-class
// rounding, and no heap spans left partly used among the garbage of the
// start-up rebuild, which the runtime can then return to the OS whole.
type strArena struct {
	b strings.Builder
}

func (a *strArena) clone(s string) string {
	if len(s) > arenaChunk/8 {
		return strings.Clone(s)
	}
	if a.b.Cap()-a.b.Len() < len(s) {
		a.b = strings.Builder{}
		a.b.Grow(arenaChunk)
	}
	// Within its capacity a Builder only appends, so the bytes behind
	// earlier results never change or move.
	start := a.b.Len()
	a.b.WriteString(s)
	return a.b.String()[start:]
}
