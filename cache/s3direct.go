package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"time"

	"github.com/minio/minio-go/v7"
)

// Direct uploads: an agent PUTs an output's compressed NAR straight into
// the bucket with a presigned URL the coordinator gave it, for a temp key
// of its own (directDir/<agent>/<build>/<token>), never a key a narinfo
// names. The coordinator then takes the object out of the agent's reach
// (Take: a server-side copy to <token>.taken, the agent's key deleted; the
// URL can only create a new object under the old key, which nothing
// reads), verifies the taken copy by reading it back, and publishes it
// (AdoptObject, then Cache.PublishUpload: copied by the store to its nar/ key,
// the temp object deleted), or deletes it. Clean removes what a crash left
// (everything under tempDir but direct uploads younger than DirectKeep).

const (
	// directDir holds agents' direct uploads, under tempDir.
	directDir = tempDir + "direct/"
	// MaxDirectPut is the largest object one PUT may create (S3's limit);
	// larger outputs go over SFTP.
	MaxDirectPut = 5 << 30
	// DefaultDirectExpiry is how long a presigned upload URL is valid: S3
	// checks it when a request starts, so a long PUT begun in time
	// completes.
	DefaultDirectExpiry = 15 * time.Minute
	// DirectKeep is how long Clean leaves an agent's direct upload in
	// place at a start: its build stays with the agent across the
	// coordinator's restart, and the agent reports it when it reconnects,
	// so deleting it would fail a good result. Older ones are garbage
	// (their builds requeued long since).
	DirectKeep = 24 * time.Hour
)

// tokenPattern is the form of a direct upload's token (randomName).
var tokenPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// idPattern bounds the agent and build ids that name a direct upload's
// area.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// DirectUploads hands out presigned upload URLs for an S3Store and takes
// the uploaded objects back for verification.
type DirectUploads struct {
	s      *S3Store
	expiry time.Duration
}

// NewDirectUploads serves direct uploads into s; URLs are valid for expiry
// (DefaultDirectExpiry when 0).
func NewDirectUploads(s *S3Store, expiry time.Duration) *DirectUploads {
	if expiry <= 0 {
		expiry = DefaultDirectExpiry
	}
	return &DirectUploads{s: s, expiry: expiry}
}

// Expiry is how long a URL is valid.
func (d *DirectUploads) Expiry() time.Duration { return d.expiry }

// DirectKey is the store key of agent's direct upload token for build:
// under the agent's and the build's own temp area, so no URL can name
// anything else.
func DirectKey(agent, build, token string) (string, error) {
	if !idPattern.MatchString(agent) || !idPattern.MatchString(build) {
		return "", fmt.Errorf("direct upload: agent %q or build %q cannot name an upload area", agent, build)
	}
	if !tokenPattern.MatchString(token) {
		return "", fmt.Errorf("direct upload: token %q is not 32 hex digits", token)
	}
	return directDir + agent + "/" + build + "/" + token, nil
}

// NewToken is a fresh random token.
func NewToken() string { return randomName() }

// Presign returns a URL with which anyone may PUT one object under key
// (from DirectKey) until the expiry.
func (d *DirectUploads) Presign(ctx context.Context, key string) (*url.URL, error) {
	obj, err := d.directObject(key)
	if err != nil {
		return nil, err
	}
	u, err := d.s.cli.PresignedPutObject(ctx, d.s.cfg.Bucket, obj, d.expiry)
	if err != nil {
		return nil, fmt.Errorf("direct upload: presign %s: %w", obj, err)
	}
	return u, nil
}

func (d *DirectUploads) directObject(key string) (string, error) {
	if path.Clean(key) != key || len(key) <= len(directDir) || key[:len(directDir)] != directDir {
		return "", fmt.Errorf("direct upload: key %q is not in %s", key, directDir)
	}
	return d.s.prefix + key, nil
}

// takenKey is where Take moves key.
func takenKey(key string) string { return key + ".taken" }

// Take moves the agent's object at key (from DirectKey) out of its URL's
// reach: a server-side copy to a key no URL names, then the agent's key
// deleted. It returns the taken key and its size; a missing object is an
// error matching fs.ErrNotExist.
func (d *DirectUploads) Take(ctx context.Context, key string) (string, int64, error) {
	src, err := d.directObject(key)
	if err != nil {
		return "", 0, err
	}
	dst := takenKey(key)
	st, err := d.s.cli.StatObject(ctx, d.s.cfg.Bucket, src, minio.StatObjectOptions{})
	if err != nil {
		err = notExist(err)
		if isNotExist(err) {
			// Taken by an earlier copy of the same result whose read
			// failed (the store's trouble): verify that copy.
			if info, terr := d.s.Stat(ctx, dst); terr == nil {
				return dst, info.Size, nil
			}
		}
		return "", 0, fmt.Errorf("direct upload %s: %w", key, err)
	}
	if st.Size > MaxDirectPut {
		return "", 0, fmt.Errorf("direct upload %s: %d bytes, over the %d of one PUT", key, st.Size, int64(MaxDirectPut))
	}
	// One CopyObject reads a consistent object: what was there when it
	// ran, whatever the agent PUTs meanwhile.
	if err := d.s.copyObject(ctx, src, d.s.prefix+dst, st.Size, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return "", 0, fmt.Errorf("direct upload %s: %w", key, notExist(err))
	}
	if err := d.s.cli.RemoveObject(ctx, d.s.cfg.Bucket, src, minio.RemoveObjectOptions{}); err != nil {
		d.s.log.Warn("delete a taken direct upload (removed with its build, or by Clean at the next start)", "object", src, "err", err)
	}
	info, err := d.s.Stat(ctx, dst)
	if err != nil {
		return "", 0, fmt.Errorf("direct upload %s: taken copy: %w", key, err)
	}
	return dst, info.Size, nil
}

// Open reads a taken object.
func (d *DirectUploads) Open(ctx context.Context, taken string) (Object, error) {
	if _, err := d.directObject(taken); err != nil {
		return nil, err
	}
	return d.s.Open(ctx, taken)
}

// Remove deletes the objects of a direct upload (its key and its taken
// copy), those that are there.
func (d *DirectUploads) Remove(ctx context.Context, key string) error {
	var errs []error
	for _, k := range []string{key, takenKey(key)} {
		obj, err := d.directObject(k)
		if err != nil {
			return err
		}
		if err := d.s.cli.RemoveObject(ctx, d.s.cfg.Bucket, obj, minio.RemoveObjectOptions{}); err != nil && !isNotExist(notExist(err)) {
			errs = append(errs, fmt.Errorf("direct upload: delete %s: %w", obj, err))
		}
	}
	return errors.Join(errs...)
}

// AdoptObject makes the complete object at the temp key tmpKey (under
// tempDir, of size bytes) an Upload of the store: placing it copies it to
// its key inside the object store and deletes it; Discard deletes it.
func (s *S3Store) AdoptObject(ctx context.Context, tmpKey string, size int64) (Upload, error) {
	if path.Clean(tmpKey) != tmpKey || len(tmpKey) <= len(tempDir) || tmpKey[:len(tempDir)] != tempDir {
		return nil, fmt.Errorf("s3 store: adopt %q: not a temp key (%s…): %w", tmpKey, tempDir, fs.ErrInvalid)
	}
	info, err := s.Stat(ctx, tmpKey)
	if err != nil {
		return nil, fmt.Errorf("s3 store: adopt %s: %w", tmpKey, err)
	}
	if info.Size != size {
		return nil, fmt.Errorf("s3 store: adopt %s: %d bytes, want %d", tmpKey, info.Size, size)
	}
	u := s.newUpload(ctx)
	u.tmp, u.size, u.closed, u.completed = s.prefix+tmpKey, size, true, true
	return u, nil
}

// AdoptObject adopts a taken direct upload (see S3Store.AdoptObject).
func (d *DirectUploads) AdoptObject(ctx context.Context, taken string, size int64) (Upload, error) {
	if _, err := d.directObject(taken); err != nil {
		return nil, err
	}
	return d.s.AdoptObject(ctx, taken, size)
}
