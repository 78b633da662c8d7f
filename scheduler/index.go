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
	mask := uint64(len(x.slots) - 1)
	for i := maphash.String(x.seed, key) & mask; ; i = (i + 1) & mask {
		switch v := x.slots[i]; v {
		case 0:
			return 0, false
		case tombstone:
		default:
			if keyOf(v-1) == key {
				return v - 1, true
			}
		}
	}
}

// put adds key → val; the key must not be present.
func (x *strIndex) put(key string, val int32, keyOf func(int32) string) {
	if (x.used+1)*4 > len(x.slots)*3 {
		x.resize(keyOf)
	}
	mask := uint64(len(x.slots) - 1)
	for i := maphash.String(x.seed, key) & mask; ; i = (i + 1) & mask {
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

// del removes key if present.
func (x *strIndex) del(key string, keyOf func(int32) string) {
	mask := uint64(len(x.slots) - 1)
	for i := maphash.String(x.seed, key) & mask; ; i = (i + 1) & mask {
		switch v := x.slots[i]; v {
		case 0:
			return
		case tombstone:
		default:
			if keyOf(v-1) == key {
				x.slots[i] = tombstone
				x.n--
				return
			}
		}
	}
}

// resize rebuilds the table for the live entries, dropping tombstones, at a
// load between 3/8 and 3/4 after growth.
func (x *strIndex) resize(keyOf func(int32) string) {
	size := len(x.slots)
	for (x.n+1)*2 > size {
		size *= 2
	}
	old := x.slots
	x.slots = make([]int32, size)
	x.n, x.used = 0, 0
	for _, v := range old {
		if v > 0 {
			x.put(keyOf(v-1), v-1, keyOf)
		}
	}
}
