package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says which bucket an S3Store uses and how to reach it.
type S3Config struct {
	Bucket string
	// Prefix is prepended (with a slash) to every key; "" for the bucket's
	// root.
	Prefix string
	// Endpoint is HOST[:PORT]; default s3.amazonaws.com.
	Endpoint string
	// Region; default us-east-1.
	Region string
	// Insecure talks plain HTTP (scheme=http).
	Insecure bool
	// AccessKey and SecretKey sign requests (SessionToken too, when set).
	AccessKey, SecretKey, SessionToken string
	// CredentialsFile, when set, is an AWS shared credentials file whose
	// Profile (default "default") is used instead of the keys.
	CredentialsFile, Profile string
	// SpoolDir holds uploads being written before they are sent (a NAR
	// the cache compresses itself, a narinfo, a log). Default os.TempDir().
	SpoolDir string
	// PartSize of multipart uploads; 0 lets the client choose (16 MiB
	// and up, by object size) for adopted files and makes streamed
	// uploads use 8 MiB parts.
	PartSize uint64
	// MaxBufferBytes bounds the memory all streamed uploads hold
	// together (default DefaultMaxBufferBytes); past it, an upload's part
	// goes through a spool file.
	MaxBufferBytes int64
	// MaxRetries of a failed request; 0 keeps the client's default (10,
	// with backoff).
	MaxRetries int
	// Transport, when set, replaces the client's HTTP transport.
	Transport http.RoundTripper
	Logger    *slog.Logger
	// Now is the clock Clean ages direct uploads by; default time.Now.
	Now func() time.Time
}

// ParseS3URL reads s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&scheme=http|https&profile=P]
// into an S3Config without credentials.
func ParseS3URL(raw string) (S3Config, error) {
	var cfg S3Config
	u, err := url.Parse(raw)
	if err != nil {
		return cfg, fmt.Errorf("cache store %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return cfg, fmt.Errorf("cache store %q: want s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&scheme=http|https", raw)
	}
	cfg.Bucket = u.Host
	cfg.Prefix = strings.Trim(u.Path, "/")
	if cfg.Prefix != "" && path.Clean(cfg.Prefix) != cfg.Prefix {
		return cfg, fmt.Errorf("cache store %q: prefix %q is not clean", raw, cfg.Prefix)
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "scheme", "profile":
		default:
			return cfg, fmt.Errorf("cache store %q: unknown parameter %q (have endpoint, region, scheme, profile)", raw, k)
		}
	}
	cfg.Endpoint = q.Get("endpoint")
	cfg.Region = q.Get("region")
	cfg.Profile = q.Get("profile")
	switch q.Get("scheme") {
	case "", "https":
	case "http":
		cfg.Insecure = true
	default:
		return cfg, fmt.Errorf("cache store %q: scheme %q (want http or https)", raw, q.Get("scheme"))
	}
	return cfg, nil
}

// S3Store is a Store in an S3-compatible bucket, with the same layout as
// a FileStore's directory under its prefix, so the bucket can be served
// to Nix as it is. An upload the cache writes itself is spooled to a temp
// file and sent when it is placed; an adopted file is sent from where it
// is. Every object appears whole or not at all (a PUT, or a multipart
// upload completed only after its last part), so Sync has nothing to do.
type S3Store struct {
	cli    *minio.Client
	cfg    S3Config
	log    *slog.Logger
	prefix string // cfg.Prefix + "/" or ""
	mem    *memBudget
	// copyLimit is the largest object copied with one CopyObject.
	copyLimit int64
}

// OpenS3 connects to cfg's bucket, which must exist.
func OpenS3(ctx context.Context, cfg S3Config) (*S3Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 store: no bucket")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "s3.amazonaws.com"
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var creds *credentials.Credentials
	switch {
	case cfg.CredentialsFile != "":
		profile := cfg.Profile
		if profile == "" {
			profile = "default"
		}
		creds = credentials.NewFileAWSCredentials(cfg.CredentialsFile, profile)
		if _, err := creds.GetWithContext(&credentials.CredContext{Endpoint: cfg.Endpoint}); err != nil {
			return nil, fmt.Errorf("s3 store: credentials file %s (profile %s): %w", cfg.CredentialsFile, profile, err)
		}
	case cfg.AccessKey != "":
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	default:
		return nil, errors.New("s3 store: no credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file)")
	}
	cli, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, Transport: cfg.Transport,
		BucketLookup: minio.BucketLookupPath, MaxRetries: cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: %w", cfg.Endpoint, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBufferBytes <= 0 {
		cfg.MaxBufferBytes = DefaultMaxBufferBytes
	}
	s := &S3Store{cli: cli, cfg: cfg, log: cfg.Logger, mem: &memBudget{limit: cfg.MaxBufferBytes}, copyLimit: maxCopy}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	ok, err := cli.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("%s: bucket %s: %w", s, cfg.Bucket, err)
	}
	if !ok {
		return nil, fmt.Errorf("%s: bucket %s does not exist", s, cfg.Bucket)
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: spool dir: %w", s, err)
	}
	return s, nil
}

func (s *S3Store) String() string {
	scheme := "https"
	if s.cfg.Insecure {
		scheme = "http"
	}
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&scheme=%s", s.cfg.Bucket, s.cfg.Prefix, s.cfg.Endpoint, s.cfg.Region, scheme)
}

// Client is the store's S3 client (for tests and cache migrate).
func (s *S3Store) Client() *minio.Client { return s.cli }

// Bucket is the store's bucket.
func (s *S3Store) Bucket() string { return s.cfg.Bucket }

func (s *S3Store) object(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != key {
		return "", fmt.Errorf("s3 store: bad key %q: %w", key, fs.ErrNotExist)
	}
	return s.prefix + key, nil
}

// notExist turns S3's "no such key" into fs.ErrNotExist.
func notExist(err error) error {
	if err == nil {
		return nil
	}
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey, "NotFound":
		return fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	return err
}

// Create starts a streamed upload (s3upload.go): nothing goes to disk.
func (s *S3Store) Create(ctx context.Context) (Upload, error) {
	return s.newUpload(ctx), nil
}

func (s *S3Store) Adopt(ctx context.Context, p string) (Upload, error) {
	return adoptSpooled(s, "s3 store", p)
}

// Sync checks the uploads: their bytes become durable in the bucket when
// they are placed, before the object is visible.
func (s *S3Store) Sync(ctx context.Context, ups ...Upload) error {
	for _, u := range ups {
		if su, ok := u.(*s3Upload); ok && su != nil && su.s == s {
			if !su.closed || su.done {
				return errors.New("s3 store: sync: upload not closed, or already placed or discarded")
			}
			if su.err != nil {
				return su.err
			}
			continue
		}
		su, err := ownSpooled(s, "s3 store", u)
		if err != nil {
			return err
		}
		if su.f != nil {
			return fmt.Errorf("s3 store: sync %s: upload not closed", su.name)
		}
	}
	return nil
}

// placeParallel bounds the uploads of one Place in flight at once.
const placeParallel = 8

func (s *S3Store) Place(ctx context.Context, ps ...Placement) error {
	errs := make([]error, len(ps))
	sem := make(chan struct{}, placeParallel)
	var wg sync.WaitGroup
	for i, p := range ps {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = s.place(ctx, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *S3Store) place(ctx context.Context, p Placement) error {
	if p.Upload == nil {
		return errors.New("s3 store: place: no upload")
	}
	defer p.Upload.Discard()
	obj, err := s.object(p.Key)
	if err != nil {
		return err
	}
	if su, ok := p.Upload.(*s3Upload); ok && su.s == s {
		if !su.closed || su.done || su.err != nil {
			return fmt.Errorf("s3 store: place %s: upload not closed, failed or already placed", p.Key)
		}
	} else if su, err := ownSpooled(s, "s3 store", p.Upload); err != nil {
		return err
	} else if su.f != nil {
		return fmt.Errorf("s3 store: place %s: upload not closed", p.Key)
	}
	if p.Keep {
		_, err := s.cli.StatObject(ctx, s.cfg.Bucket, obj, minio.StatObjectOptions{})
		if err == nil {
			if sp, ok := p.Upload.(*spoolFile); ok {
				// Placing consumes an adopted file too.
				sp.done = true
				return os.Remove(sp.name)
			}
			return nil // Discard (deferred) drops the upload
		}
		if !isNotExist(notExist(err)) {
			return fmt.Errorf("s3 store: stat %s: %w", obj, err)
		}
	}
	opts := minio.PutObjectOptions{ContentType: contentType(p.Key), PartSize: s.cfg.PartSize}
	if p.Encoding != "" && p.Encoding != "none" {
		opts.ContentEncoding = p.Encoding
	}
	if strings.HasPrefix(p.Key, "nar/") {
		opts.CacheControl = "public, max-age=31536000, immutable"
	}
	if su, ok := p.Upload.(*s3Upload); ok {
		return su.place(ctx, obj, opts)
	}
	su := p.Upload.(*spoolFile)
	// A multipart upload that fails is aborted by the client; a crash
	// mid-upload leaves an incomplete upload, never an object, and Clean
	// aborts it at the next start.
	if _, err := s.cli.FPutObject(ctx, s.cfg.Bucket, obj, su.name, opts); err != nil {
		return fmt.Errorf("s3 store: put %s: %w", obj, err)
	}
	su.done = true
	return os.Remove(su.name)
}

// contentType is what Nix's HTTP binary caches serve each kind of key as.
func contentType(key string) string {
	switch {
	case key == "nix-cache-info":
		return typeCacheInfo
	case strings.HasSuffix(key, ".narinfo"):
		return typeNarinfo
	case strings.HasPrefix(key, "nar/"):
		return typeNar
	case strings.HasPrefix(key, "log/"):
		return typeLog
	}
	return "application/octet-stream"
}

type s3Object struct {
	*minio.Object
	info ObjectInfo
}

func (o *s3Object) Info() ObjectInfo { return o.info }

func (s *S3Store) Open(ctx context.Context, key string) (Object, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	o, err := s.cli.GetObject(ctx, s.cfg.Bucket, obj, minio.GetObjectOptions{})
	if err != nil {
		return nil, notExist(err)
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		return nil, notExist(err)
	}
	return &s3Object{Object: o, info: ObjectInfo{Key: key, Size: st.Size, ModTime: st.LastModified}}, nil
}

func (s *S3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	st, err := s.cli.StatObject(ctx, s.cfg.Bucket, obj, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, notExist(err)
	}
	return ObjectInfo{Key: key, Size: st.Size, ModTime: st.LastModified}, nil
}

func (s *S3Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	if err := s.cli.RemoveObject(ctx, s.cfg.Bucket, obj, minio.RemoveObjectOptions{}); err != nil {
		return notExist(err)
	}
	return nil
}

func (s *S3Store) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn stops early
	for oi := range s.cli.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix}) {
		if oi.Err != nil {
			return fmt.Errorf("s3 store: list %s: %w", prefix, oi.Err)
		}
		key := strings.TrimPrefix(oi.Key, s.prefix)
		if strings.HasSuffix(key, "/") {
			continue // a common prefix ("nar/"), not an object
		}
		if err := fn(ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			if errors.Is(err, ErrStopList) {
				return nil
			}
			return err
		}
	}
	return ctx.Err()
}

// Clean removes spooled uploads and temp objects a crash left (but agents'
// direct uploads younger than DirectKeep, whose results may still come)
// and aborts incomplete multipart uploads under the prefix (an interrupted NAR never becomes
// an object, but its parts take space until aborted).
func (s *S3Store) Clean(ctx context.Context) error {
	ents, err := os.ReadDir(s.cfg.SpoolDir)
	if err != nil {
		return fmt.Errorf("%s: spool dir: %w", s, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix+"s3-") && e.Type().IsRegular() {
			os.Remove(path.Join(s.cfg.SpoolDir, e.Name()))
		}
	}
	var errs []error
	// Temp objects of streamed uploads completed but never placed.
	for oi := range s.cli.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.prefix + tempDir, Recursive: true}) {
		if oi.Err != nil {
			errs = append(errs, fmt.Errorf("list temp objects: %w", oi.Err))
			break
		}
		if strings.HasPrefix(oi.Key, s.prefix+directDir) && s.cfg.Now().Sub(oi.LastModified) < DirectKeep {
			// An agent's direct upload whose result may still come: its
			// build outlives this restart (docs/cache.md).
			continue
		}
		if err := s.cli.RemoveObject(ctx, s.cfg.Bucket, oi.Key, minio.RemoveObjectOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("delete temp object %s: %w", oi.Key, err))
			continue
		}
		s.log.InfoContext(ctx, "deleted an interrupted upload's temp object", "key", oi.Key)
	}
	for up := range s.cli.ListIncompleteUploads(ctx, s.cfg.Bucket, s.prefix, true) {
		if up.Err != nil {
			// Not every S3 server lists multipart uploads; what it keeps
			// is never an object a narinfo names.
			s.log.WarnContext(ctx, "list incomplete uploads", "store", s.String(), "err", up.Err)
			break
		}
		if err := s.cli.RemoveIncompleteUpload(ctx, s.cfg.Bucket, up.Key); err != nil {
			errs = append(errs, fmt.Errorf("abort incomplete upload %s: %w", up.Key, err))
			continue
		}
		s.log.InfoContext(ctx, "aborted an incomplete upload", "key", up.Key)
	}
	return errors.Join(errs...)
}

var _ io.ReadSeekCloser = (*s3Object)(nil)

// Credentials for an s3:// store: keys (from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, usually) or an AWS shared
// credentials file, which wins when set.
type Credentials struct {
	AccessKey, SecretKey, SessionToken string
	File                               string
}

// OpenStoreURL opens the store a URL names: file:DIR (a FileStore) or
// s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&scheme=http|https (an
// S3Store spooling its own uploads in spoolDir).
func OpenStoreURL(ctx context.Context, raw string, creds Credentials, spoolDir string, log *slog.Logger) (Store, error) {
	switch {
	case strings.HasPrefix(raw, "file:"):
		dir := strings.TrimPrefix(raw, "file:")
		if dir == "" {
			return nil, fmt.Errorf("cache store %q: no directory", raw)
		}
		return NewFileStore(dir, log)
	case strings.HasPrefix(raw, "s3://"):
		cfg, err := ParseS3URL(raw)
		if err != nil {
			return nil, err
		}
		cfg.AccessKey, cfg.SecretKey, cfg.SessionToken = creds.AccessKey, creds.SecretKey, creds.SessionToken
		cfg.CredentialsFile, cfg.SpoolDir, cfg.Logger = creds.File, spoolDir, log
		return OpenS3(ctx, cfg)
	}
	return nil, fmt.Errorf("cache store %q: want file:DIR or s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&scheme=http|https", raw)
}
