// Package cache is the coordinator's binary cache: static objects
// (nix-cache-info, <hashpart>.narinfo, nar/<filehash>.nar<suffix>,
// log/<drv basename>) that Nix and Guix clients substitute from, kept in a
// Store (a directory, or an S3-compatible bucket), plus a read-only HTTP
// handler for them.
//
// Invariants the package keeps:
//   - a narinfo is written only after its NAR object is complete and
//     durable, and every object appears atomically (Store.Place), so a
//     reader (this handler, nginx, a crash) never sees a partial object or
//     a narinfo without its NAR;
//   - the first publication of a store path wins: publishing it again with
//     the same NarHash is a no-op, with another NarHash it is a *ConflictError
//     (a non-deterministic build, or a forged upload).
//
// One narinfo serves both Nix and Guix clients. For a Nix-only cache (no
// Guix key) it is exactly what `nix copy` writes. With a Guix key (set by
// LoadOrCreateKeys for /gnu/store) the file is laid out as guix publish does
// — StorePath, NarHash, NarSize, References, Deriver, then Signature: — and
// the fields Guix does not sign follow: URL, Compression, FileHash, FileSize,
// Sig, CA. Guix hashes only the bytes before "Signature:" and ignores Sig and
// CA; Nix reads fields in any order and ignores Signature. narinfo.Parse reads
// the result with both signatures intact (tests check VerifyNix, VerifyGuix
// and real Nix substituting from such a file).
package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxNarSize = 64 << 30
	DefaultMaxLogSize = 256 << 20
	// Priority 30 sits before cache.nixos.org (40) so agents prefer the farm.
	cachePriority = 30
)

// Options configure a Cache.
type Options struct {
	// StoreDir is the farm's store directory; every published path must be
	// in it. Default /nix/store.
	StoreDir string
	// Compression for NARs the cache compresses itself (PublishLocal,
	// Import) and for logs. Default compression.Default (zstd).
	Compression string
	// NixKey signs every narinfo (Sig:). Required.
	NixKey signing.NixSecretKey
	// GuixKey, when set, adds a Guix Signature: to every narinfo.
	GuixKey *signing.GuixSecretKey
	// GuixHostname is the informational host in Guix signatures.
	// Default: os.Hostname().
	GuixHostname string
	// MaxNarSize bounds one uncompressed NAR read by Import or PublishLocal.
	MaxNarSize int64
	// MaxLogSize bounds a stored build log; longer logs are cut there.
	MaxLogSize int64
	Logger     *slog.Logger
	// Clock stamps recorded accesses and collections. Default: the wall
	// clock.
	Clock clock.Clock
}

// Cache is a binary cache in a Store. Its methods are safe for concurrent
// use; open one Cache per store (opening cleans what a crash left).
type Cache struct {
	store Store
	// life is the context Open was given: the cache's lifetime, for the
	// store I/O of methods that take none (Has, Lookup).
	life  context.Context
	dir   string // a FileStore's directory, else ""
	opts  Options
	log   *slog.Logger
	info  []byte // nix-cache-info contents
	locks [64]sync.Mutex
	zpool *compression.Pool
	bufs  sync.Pool // *bufio.Writer of 256 KiB for spool
	// spoolDirs are a FileStore's spool directories (tests look at them).
	spoolDirs []string
	// counts are the narinfos and bytes held, for metrics (stats.go).
	counts counts
	// onStep, set only by tests, observes each durability step of a
	// FileStore (see commit).
	onStep func(op, path string)
	// fence keeps collections away from what is being published, and
	// batches last accesses (gc.go).
	fence fence
}

// Entry describes one store path to publish. The caller has verified that
// the compressed file matches FileHash/FileSize and decompresses to a NAR
// with NarHash/NarSize.
type Entry struct {
	StorePath   string
	NarHash     nixhash.Hash
	NarSize     int64
	FileHash    nixhash.Hash
	FileSize    int64
	Compression string
	References  []string // full store paths
	Deriver     string   // full .drv path or basename; "" if unknown
	CA          string
}

// ErrConflict is matched (errors.Is) by *ConflictError.
var ErrConflict = errors.New("store path already published with a different NarHash")

// ConflictError reports a second publication of a store path with another
// NarHash. The first publication stays.
type ConflictError struct {
	StorePath string
	Have, Got nixhash.Hash
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("cache: %s already published with NarHash %s, refusing %s", e.StorePath, e.Have, e.Got)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Open prepares dir as a cache in a FileStore: nix-cache-info, nar/ and
// log/.
func Open(ctx context.Context, dir string, opts Options) (*Cache, error) {
	c := &Cache{}
	fs, err := NewFileStore(dir, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("cache open %s: %w", dir, err)
	}
	fs.trace = c.trace
	c.dir, c.spoolDirs = dir, fs.spoolDirs
	return c.open(ctx, fs, opts)
}

// OpenStore prepares st as a cache: it writes nix-cache-info when it is
// missing or stale and cleans what interrupted writes left.
func OpenStore(ctx context.Context, st Store, opts Options) (*Cache, error) {
	c := &Cache{}
	if fs, ok := st.(*FileStore); ok {
		c.dir, c.spoolDirs = fs.dir, fs.spoolDirs
	}
	return c.open(ctx, st, opts)
}

func (c *Cache) open(ctx context.Context, st Store, opts Options) (*Cache, error) {
	dir := st.String()
	if opts.StoreDir == "" {
		opts.StoreDir = "/nix/store"
	}
	if err := storepath.ValidateStoreDir(opts.StoreDir); err != nil {
		return nil, fmt.Errorf("cache open %s: store dir: %w", dir, err)
	}
	if opts.Compression == "" {
		opts.Compression = compression.Default
	}
	if !compression.Writable(opts.Compression) {
		return nil, fmt.Errorf("cache open %s: compression %q cannot be written (have %v)", dir, opts.Compression, compression.Names())
	}
	if opts.NixKey.Name == "" || len(opts.NixKey.Key) == 0 {
		return nil, fmt.Errorf("cache open %s: a Nix signing key is required", dir)
	}
	if opts.GuixKey != nil && opts.GuixHostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		opts.GuixHostname = h
	}
	if opts.MaxNarSize <= 0 {
		opts.MaxNarSize = DefaultMaxNarSize
	}
	if opts.MaxLogSize <= 0 {
		opts.MaxLogSize = DefaultMaxLogSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	c.store, c.life, c.opts, c.log, c.zpool = st, ctx, opts, opts.Logger.With("cache", dir), compression.NewPool(0)
	c.initCounts()
	if err := st.Clean(ctx); err != nil {
		return nil, fmt.Errorf("cache open %s: %w", dir, err)
	}
	c.info = []byte("StoreDir: " + opts.StoreDir + "\nWantMassQuery: 1\nPriority: " + strconv.Itoa(cachePriority) + "\n")
	cur, err := readSmall(ctx, st, "nix-cache-info", 4096)
	if err != nil || !bytes.Equal(cur, c.info) {
		if err := putBytes(ctx, st, "nix-cache-info", c.info); err != nil {
			return nil, fmt.Errorf("cache open %s: write nix-cache-info: %w", dir, err)
		}
	}
	return c, nil
}

// Dir is the cache directory of a FileStore, "" for other stores.
func (c *Cache) Dir() string { return c.dir }

// Store is where the cache keeps its objects.
func (c *Cache) Store() Store { return c.store }

// StoreDir is the store directory the cache serves.
func (c *Cache) StoreDir() string { return c.opts.StoreDir }

// PublicKey is the Nix key clients put in trusted-public-keys.
func (c *Cache) PublicKey() signing.NixPublicKey { return c.opts.NixKey.Public() }

func (c *Cache) lockFor(hashPart string) *sync.Mutex {
	return &c.locks[c.stripe(hashPart)]
}

func (c *Cache) stripe(hashPart string) int {
	h := fnv.New32a()
	h.Write([]byte(hashPart))
	return int(h.Sum32() % uint32(len(c.locks)))
}

// narinfoKey is the key of a narinfo.
func narinfoKey(hashPart string) string { return hashPart + ".narinfo" }

// narinfoPath is where a FileStore keeps a narinfo.
func (c *Cache) narinfoPath(hashPart string) string {
	return filepath.Join(c.dir, narinfoKey(hashPart))
}

// maxNarinfoSize bounds a narinfo read back from the store: a path with
// thousands of references stays far below it.
const maxNarinfoSize = 4 << 20

// parsePath checks that p is a store path of this cache's store.
func (c *Cache) parsePath(p string) (storepath.StorePath, error) {
	sp, err := storepath.Parse(p)
	if err != nil {
		return sp, err
	}
	if sp.StoreDir != c.opts.StoreDir {
		return sp, fmt.Errorf("store path %s is not in %s", p, c.opts.StoreDir)
	}
	return sp, nil
}

// Has reports whether storePath has a narinfo in the cache.
func (c *Cache) Has(storePath string) bool {
	sp, err := c.parsePath(storePath)
	if err != nil {
		return false
	}
	c.touch(sp.HashPart)
	_, err = c.store.Stat(c.life, narinfoKey(sp.HashPart))
	return err == nil
}

// ErrNotFound is returned by Lookup for a path the cache does not hold.
var ErrNotFound = errors.New("not in cache")

// Lookup reads the narinfo of storePath.
func (c *Cache) Lookup(storePath string) (*narinfo.NarInfo, error) {
	sp, err := c.parsePath(storePath)
	if err != nil {
		return nil, fmt.Errorf("cache lookup: %w", err)
	}
	c.touch(sp.HashPart)
	b, err := readSmall(c.life, c.store, narinfoKey(sp.HashPart), maxNarinfoSize)
	if isNotExist(err) {
		return nil, fmt.Errorf("cache lookup %s: %w", storePath, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cache lookup: %w", err)
	}
	ni, err := narinfo.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("cache lookup %s: %w", storePath, err)
	}
	if ni.StorePath != sp.String() {
		return nil, fmt.Errorf("cache lookup %s: narinfo names %s", storePath, ni.StorePath)
	}
	return ni, nil
}

// narURL is where a NAR with this file hash and compression lives.
func narURL(fileHash nixhash.Hash, comp string) string {
	return "nar/" + nixhash.Base32(fileHash.Digest) + ".nar" + compression.Suffix(comp)
}

func (c *Cache) checkEntry(e *Entry) (storepath.StorePath, error) {
	sp, err := c.parsePath(e.StorePath)
	if err != nil {
		return sp, err
	}
	switch {
	case e.NarHash.Algo != nixhash.SHA256 || len(e.NarHash.Digest) != 32:
		return sp, fmt.Errorf("NarHash %q is not sha256", e.NarHash.Algo)
	case e.NarSize <= 0:
		return sp, fmt.Errorf("NarSize %d", e.NarSize)
	case e.FileHash.Algo != nixhash.SHA256 || len(e.FileHash.Digest) != 32:
		return sp, fmt.Errorf("FileHash %q is not sha256", e.FileHash.Algo)
	case e.FileSize <= 0:
		return sp, fmt.Errorf("FileSize %d", e.FileSize)
	case !compression.Supported(e.Compression):
		return sp, fmt.Errorf("compression %q unknown", e.Compression)
	case strings.ContainsAny(e.CA, "\n\r"):
		return sp, fmt.Errorf("CA %q contains a newline", e.CA)
	}
	for _, r := range e.References {
		if _, err := c.parsePath(r); err != nil {
			return sp, fmt.Errorf("reference: %w", err)
		}
	}
	if e.Deriver != "" {
		if _, err := c.deriverBase(e.Deriver); err != nil {
			return sp, err
		}
	}
	return sp, nil
}

func (c *Cache) deriverBase(d string) (string, error) {
	if strings.HasPrefix(d, "/") {
		sp, err := c.parsePath(d)
		if err != nil {
			return "", fmt.Errorf("deriver: %w", err)
		}
		d = sp.Base()
	}
	sp, err := storepath.ParseBase(d)
	if err != nil || !sp.IsDerivation() {
		return "", fmt.Errorf("deriver %q is not a .drv path", d)
	}
	return d, nil
}

// Publish moves compressedFile into the store as e's NAR and writes the
// signed narinfo of e. On success the file has been consumed (moved, or
// removed when the same content or path was already there); on error it is
// left in place.
func (c *Cache) Publish(ctx context.Context, e Entry, compressedFile string) error {
	sp, release, done, err := c.enterPublish(ctx, &e)
	if err != nil {
		return err
	}
	defer release()
	if done {
		os.Remove(compressedFile)
		return nil
	}
	st, err := os.Stat(compressedFile)
	if err != nil {
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	if !st.Mode().IsRegular() || st.Size() != e.FileSize {
		return fmt.Errorf("cache publish %s: %s is %d bytes (%s), entry says FileSize %d", e.StorePath, compressedFile, st.Size(), st.Mode().Type(), e.FileSize)
	}
	up, err := c.store.Adopt(ctx, compressedFile)
	if err != nil {
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	return c.publishUpload(ctx, sp, e, up)
}

// PublishUpload publishes e with up, a closed upload of this cache's store
// holding e's compressed NAR (FileSize bytes, already verified by the
// caller), as Publish does with a file. up is consumed whatever happens.
func (c *Cache) PublishUpload(ctx context.Context, e Entry, up Upload) error {
	defer up.Discard()
	sp, release, done, err := c.enterPublish(ctx, &e)
	if err != nil {
		return err
	}
	defer release()
	if done {
		return nil
	}
	return c.publishUpload(ctx, sp, e, up)
}

// enterPublish checks e, enters the retention fence for what its
// publication relies on (release leaves it) and says whether e's path is
// already published with its NAR hash (a conflict is an error).
func (c *Cache) enterPublish(ctx context.Context, e *Entry) (sp storepath.StorePath, release func(), done bool, err error) {
	sp, err = c.checkEntry(e)
	if err != nil {
		return sp, nil, false, fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	release = c.enter(c.fenceKeys(sp.HashPart, narURL(e.FileHash, e.Compression), e.References)...)
	done, err = c.alreadyPublished(ctx, sp, e.NarHash)
	if err != nil {
		release()
		return sp, nil, false, err
	}
	return sp, release, done, nil
}

// publishUpload places up, the compressed NAR of e, and then e's narinfo;
// up is consumed whatever happens.
func (c *Cache) publishUpload(ctx context.Context, sp storepath.StorePath, e Entry, up Upload) error {
	defer up.Discard()
	url := narURL(e.FileHash, e.Compression)
	body, err := c.render(sp, &e, url)
	if err != nil {
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	// The narinfo is written before the NAR is placed so that both
	// uploads' syncs run at once (one journal commit on most filesystems)
	// instead of one after the other. The narinfo itself still appears
	// only after the NAR's placement is durable.
	info, err := c.store.Create(ctx)
	if err == nil {
		if _, err = info.Write(body); err == nil {
			err = info.Close()
		}
		defer info.Discard()
	}
	if err != nil {
		return fmt.Errorf("cache publish %s: write narinfo: %w", e.StorePath, err)
	}
	if err := c.store.Sync(ctx, up, info); err != nil {
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	if err := c.store.Place(ctx, Placement{Upload: up, Key: url, Keep: true}); err != nil {
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	mu := c.lockFor(sp.HashPart)
	mu.Lock()
	defer mu.Unlock()
	// Re-check under the lock: another publisher may have won meanwhile.
	if done, err := c.alreadyPublished(ctx, sp, e.NarHash); done || err != nil {
		return err
	}
	if err := c.store.Place(ctx, Placement{Upload: info, Key: narinfoKey(sp.HashPart)}); err != nil {
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	c.stored(1, e.FileSize)
	c.log.InfoContext(ctx, "published", "path", e.StorePath, "nar_size", e.NarSize, "file_size", e.FileSize, "compression", e.Compression)
	return nil
}

// fenceKeys are what a publication relies on: its narinfo, its NAR and
// its references (full store paths).
func (c *Cache) fenceKeys(hashPart, url string, refs []string) []string {
	keys := make([]string, 0, 2+len(refs))
	keys = append(keys, hashPart, url)
	for _, r := range refs {
		if sp, err := c.parsePath(r); err == nil {
			keys = append(keys, sp.HashPart)
		}
	}
	return keys
}

// alreadyPublished reports whether sp is there with narHash, or a conflict.
func (c *Cache) alreadyPublished(ctx context.Context, sp storepath.StorePath, narHash nixhash.Hash) (bool, error) {
	b, err := readSmall(ctx, c.store, narinfoKey(sp.HashPart), maxNarinfoSize)
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cache publish %s: %w", sp, err)
	}
	ni, err := narinfo.Parse(b)
	if err != nil {
		return false, fmt.Errorf("cache publish %s: existing narinfo: %w", sp, err)
	}
	if ni.StorePath != sp.String() {
		return false, fmt.Errorf("cache publish %s: existing narinfo %s.narinfo names %s", sp, sp.HashPart, ni.StorePath)
	}
	if !ni.NarHash.Equal(narHash) {
		return false, &ConflictError{StorePath: sp.String(), Have: ni.NarHash, Got: narHash}
	}
	return true, nil
}

// render produces the narinfo bytes (see the package comment for the
// two-flavour layout).
func (c *Cache) render(sp storepath.StorePath, e *Entry, url string) ([]byte, error) {
	ni := &narinfo.NarInfo{
		StorePath:   sp.String(),
		URL:         url,
		Compression: e.Compression,
		FileHash:    e.FileHash,
		FileSize:    uint64(e.FileSize),
		NarHash:     e.NarHash,
		NarSize:     uint64(e.NarSize),
		CA:          e.CA,
	}
	refs := make([]string, 0, len(e.References))
	for _, r := range e.References {
		refs = append(refs, r[len(c.opts.StoreDir)+1:])
	}
	ni.References = sortedUnique(refs)
	if e.Deriver != "" {
		ni.Deriver, _ = c.deriverBase(e.Deriver) // checked in checkEntry
	}
	if err := ni.SignNix(c.opts.NixKey); err != nil {
		return nil, err
	}
	if c.opts.GuixKey == nil {
		return ni.Bytes(), nil
	}
	if err := ni.SignGuix(*c.opts.GuixKey, c.opts.GuixHostname); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(ni.SignedBody)
	field := func(k, v string) { b.WriteString(k + ": " + v + "\n") }
	field("Signature", ni.Signature)
	field("URL", url)
	field("Compression", e.Compression)
	field("FileHash", e.FileHash.String())
	field("FileSize", strconv.FormatInt(e.FileSize, 10))
	for _, s := range ni.Sigs {
		field("Sig", s)
	}
	if e.CA != "" {
		field("CA", e.CA)
	}
	return b.Bytes(), nil
}

func sortedUnique(s []string) []string {
	m := make(map[string]struct{}, len(s))
	out := s[:0]
	for _, x := range s {
		if _, ok := m[x]; !ok {
			m[x] = struct{}{}
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}
