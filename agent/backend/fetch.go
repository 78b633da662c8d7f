package backend

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"path"
	"strings"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

// maxNarinfo bounds a narinfo's size.
const maxNarinfo = 1 << 20

// fetcher reads narinfos and NARs from the coordinator's cache and checks
// them: the narinfo's signature by the cache key, and the NAR's hash and
// size against the narinfo.
type fetcher struct {
	base     string
	client   *http.Client
	storeDir string
	nixKeys  []signing.NixPublicKey
	acl      *signing.ACL
}

func newFetcher(src Sources, client *http.Client, storeDir string) (*fetcher, error) {
	f := &fetcher{base: strings.TrimSuffix(src.CacheURL, "/"), client: client, storeDir: storeDir}
	if src.CacheKey == "" {
		return nil, errors.New("the coordinator announced no cache key: nothing it serves can be verified")
	}
	if k, err := signing.ParseNixPublicKey(src.CacheKey); err == nil {
		f.nixKeys = []signing.NixPublicKey{k}
		return f, nil
	}
	k, err := signing.ParseGuixPublicKey([]byte(src.CacheKey))
	if err != nil {
		return nil, fmt.Errorf("cache key %q is neither a Nix nor a Guix public key: %w", trunc(src.CacheKey), err)
	}
	f.acl = signing.NewACL(k)
	return f, nil
}

// errNotInCache means the cache has no narinfo for the path.
var errNotInCache = errors.New("not in the coordinator's cache")

// narinfo fetches and verifies p's narinfo.
func (f *fetcher) narinfo(ctx context.Context, p string) (*narinfo.NarInfo, error) {
	sp, err := storepath.Parse(p)
	if err != nil {
		return nil, err
	}
	url := f.base + "/" + sp.HashPart + ".narinfo"
	body, status, err := f.get(ctx, url, maxNarinfo)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, fmt.Errorf("%s: %w", p, errNotInCache)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, status)
	}
	ni, err := narinfo.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("narinfo of %s: %w", p, err)
	}
	if ni.StorePath != p {
		return nil, fmt.Errorf("narinfo for %s describes %s", p, ni.StorePath)
	}
	if f.acl != nil {
		err = ni.VerifyGuix(f.acl)
	} else {
		err = ni.VerifyNix(f.nixKeys)
	}
	if err != nil {
		return nil, fmt.Errorf("narinfo of %s: %w", p, err)
	}
	if ni.NarHash.Algo != nixhash.SHA256 || ni.NarSize == 0 {
		return nil, fmt.Errorf("narinfo of %s: NAR hash %s size %d: want a SHA-256 and a size", p, ni.NarHash, ni.NarSize)
	}
	return ni, nil
}

func (f *fetcher) get(ctx context.Context, url string, limit int64) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, 0, fmt.Errorf("GET %s: more than %d bytes", url, limit)
	}
	return b, resp.StatusCode, nil
}

// nar opens ni's NAR, decompressed. The reader fails instead of reaching
// EOF if the NAR does not have the narinfo's hash and size, so a daemon
// reading it never sees a complete wrong NAR.
func (f *fetcher) nar(ctx context.Context, ni *narinfo.NarInfo) (io.ReadCloser, error) {
	if ni.URL == "" || strings.Contains(ni.URL, "..") || strings.HasPrefix(ni.URL, "/") || strings.Contains(ni.URL, "://") {
		return nil, fmt.Errorf("narinfo of %s: NAR URL %q is not a path inside the cache", ni.StorePath, ni.URL)
	}
	url := f.base + "/" + path.Clean(ni.URL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	dec, err := compression.NewReader(resp.Body, ni.Compression)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("NAR of %s: %w", ni.StorePath, err)
	}
	return &verifiedNAR{r: io.LimitReader(dec, int64(ni.NarSize)+1), h: sha256.New(), ni: ni, closers: []io.Closer{dec, resp.Body}}, nil
}

type verifiedNAR struct {
	r       io.Reader
	h       hash.Hash
	n       uint64
	ni      *narinfo.NarInfo
	closers []io.Closer
}

func (v *verifiedNAR) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += uint64(n)
	if v.n > v.ni.NarSize {
		return 0, fmt.Errorf("NAR of %s is longer than its narinfo's %d bytes", v.ni.StorePath, v.ni.NarSize)
	}
	if err == io.EOF {
		if v.n != v.ni.NarSize {
			return 0, fmt.Errorf("NAR of %s has %d bytes, its narinfo says %d", v.ni.StorePath, v.n, v.ni.NarSize)
		}
		if got := v.h.Sum(nil); string(got) != string(v.ni.NarHash.Digest) {
			return 0, fmt.Errorf("NAR of %s has hash %s, its narinfo says %s", v.ni.StorePath,
				nixhash.Hash{Algo: nixhash.SHA256, Digest: got}, v.ni.NarHash)
		}
	}
	return n, err
}

func (v *verifiedNAR) Close() error {
	for _, c := range v.closers {
		c.Close()
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
