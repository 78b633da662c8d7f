package scheduler

import "hash/maphash"

// strIndex maps strings to int32 slots whose key is stored elsewhere (the
// build's id, the derivation's path), so an entry costs 4 bytes of table
// instead of a map entry holding a second string header (about 50 bytes per
// entry at a million entries). Open addressing, linear probing, tombstones.
type strIndex struct {
	seed  maphash.Seed
	slots []int32 // 0 empty, -1 deleted, else value+1
	n     int     // live entries
	used  int     // live + deleted
}

const tombstone = -1

func newStrIndex() strIndex {
	return strIndex{seed: maphash.MakeSeed(), slots: make([]int32, 16)}
}

// get finds key; keyOf returns the key stored for a value.
func (x *strIndex) get(key string, keyOf func(int32) string) (int32, bool) {
	return x.find(maphash.String(x.seed, key), func(v int32) bool { return keyOf(v) == key })
}

// put adds key → val; the key must not be present.
func (x *strIndex) put(key string, val int32, keyOf func(int32) string) {
	x.insert(maphash.String(x.seed, key), val, func(v int32) uint64 { return maphash.String(x.seed, keyOf(v)) })
}

// del removes key if present.
func (x *strIndex) del(key string, keyOf func(int32) string) {
	x.remove(maphash.String(x.seed, key), func(v int32) bool { return keyOf(v) == key })
}

// The hashed forms take the key's hash (maphash with x.seed, so String and
// Bytes of the same content agree) and a test for the wanted value, so that
// keys need not be kept as strings (build ids are kept as 16 bytes).

// find returns the value with hash h for which eq holds.
func (x *strIndex) find(h uint64, eq func(int32) bool) (int32, bool) {
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch v := x.slots[i]; v {
		case 0:
			return 0, false
		case tombstone:
		default:
			if eq(v - 1) {
				return v - 1, true
			}
		}
	}
}

// insert adds val under hash h; hashOf gives the hash of a stored value
// when the table is rebuilt.
func (x *strIndex) insert(h uint64, val int32, hashOf func(int32) uint64) {
	if (x.used+1)*4 > len(x.slots)*3 {
		x.resize(hashOf)
	}
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if v := x.slots[i]; v == 0 || v == tombstone {
			if v == 0 {
				x.used++
			}
			x.slots[i] = val + 1
			x.n++
			return
		}
	}
}

// remove removes the value with hash h for which eq holds, if present.
func (x *strIndex) remove(h uint64, eq func(int32) bool) {
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch v := x.slots[i]; v {
		case 0:
			return
		case tombstone:
		default:
			if eq(v - 1) {
				x.slots[i] = tombstone
				x.n--
				return
			}
		}
	}
}

// resize rebuilds the table for the live entries, dropping tombstones, at a
// load between 3/8 and 3/4 after growth.
func (x *strIndex) resize(hashOf func(int32) uint64) {
	size := len(x.slots)
	for (x.n+1)*2 > size {
		size *= 2
	}
	old := x.slots
	x.slots = make([]int32, size)
	x.n, x.used = 0, 0
	for _, v := range old {
		if v > 0 {
			x.insert(hashOf(v-1), v-1, hashOf)
		}
	}
}
