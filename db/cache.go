package db

import "time"

// Pin keeps a store path, and its closure, in the cache until unpinned.
type Pin struct {
	Path      string
	Reason    string
	CreatedAt time.Time
	By        string // fingerprint of the key that pinned it
}

// CacheAccess is the last time a client fetched a cached path's narinfo.
type CacheAccess struct {
	HashPart string
	At       time.Time
}

// BuildRoot is a build as cache retention sees it.
type BuildRoot struct {
	ID         string
	Derivation string
	State      BuildState
	CreatedAt  time.Time
	EndedAt    time.Time
	Tags       []Tag
	Outputs    []string // declared output paths
}
