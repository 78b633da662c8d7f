package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storepath"
)

// Direct uploads (Config.DirectUploads, docs/cache.md): an agent asks for
// a presigned URL per output file (UploadURL), PUTs the file straight into
// the cache's bucket under a temp key of its own, and reports it with the
// token. Verification takes the object out of the agent's reach, reads it
// back through the same measurer as an SFTP upload, and publishes it by a
// server-side copy; a build released without success has its temp objects
// deleted.

// ErrDirectUploadOff: the coordinator gives no upload URLs.
var ErrDirectUploadOff = errors.New("direct uploads are off on this coordinator (upload over SFTP)")

// directState tracks the upload keys handed out per build, so that a
// build released without success has its temp objects deleted.
type directState struct {
	mu     sync.Mutex
	issued map[string][]string // build → keys
	// drop carries released builds' keys to the deleting goroutine.
	drop chan []string
}

func newDirectState() directState {
	return directState{issued: map[string][]string{}, drop: make(chan []string, 1024)}
}

// UploadURL hands the agent a presigned URL for one output file of a
// build it holds: for a temp key in its own area (never a key a narinfo
// names), valid for a short while. A check side's outputs and files over
// one PUT are refused (the agent uploads them over SFTP).
func (s *Session) UploadURL(ctx context.Context, m *protocol.UploadURL) (*protocol.UploadTarget, error) {
	c := s.c
	du := c.cfg.DirectUploads
	if du == nil {
		return nil, ErrDirectUploadOff
	}
	release, err := s.admit()
	if err != nil {
		return nil, err
	}
	defer release()
	b, _, err := s.holding(ctx, m.Build, "")
	if err != nil {
		return nil, err
	}
	if _, _, err := uploadName(b, m.Upload); err != nil {
		return nil, err
	}
	if m.Size <= 0 || m.Size > protocol.MaxDirectUpload {
		return nil, fmt.Errorf("upload %s of %d bytes: a direct upload takes 1 to %d bytes (upload over SFTP)", m.Upload, m.Size, int64(protocol.MaxDirectUpload))
	}
	c.mu.Lock()
	_, side := c.checks.byBuild[b.ID]
	c.mu.Unlock()
	if side {
		return nil, fmt.Errorf("build %s is a check side, whose NARs are kept on the coordinator (upload over SFTP)", b.ID)
	}
	token := cache.NewToken()
	key, err := cache.DirectKey(s.agentID, b.ID, token)
	if err != nil {
		return nil, err
	}
	c.direct.mu.Lock()
	keys := c.direct.issued[b.ID]
	if len(keys) >= 4*len(b.Outputs) {
		c.direct.mu.Unlock()
		return nil, fmt.Errorf("build %s: %d upload URLs given already (upload over SFTP)", b.ID, len(keys))
	}
	c.direct.issued[b.ID] = append(keys, key)
	c.direct.mu.Unlock()
	u, err := du.Presign(ctx, key)
	if err != nil {
		return nil, err
	}
	c.log.Debug("direct upload URL given", "build", b.ID, "agent", s.agentID, "upload", m.Upload, "size", m.Size, "key", key)
	return &protocol.UploadTarget{
		Header: protocol.Header{ID: m.ID}, Build: b.ID, Upload: m.Upload,
		URL: u.String(), Direct: token, ExpiresSeconds: int(du.Expiry().Seconds()),
	}, nil
}

// verifyDirect checks an output the agent PUT into the bucket: the object
// is taken out of the agent's reach first, then read back through the
// measurer and compared with the report, exactly as an SFTP upload. A
// verified object is returned as an upload of the cache's store for the
// caller to publish (a copy inside the store) or discard; one that does
// not verify is deleted. A missing object is an error matching
// fs.ErrNotExist; the store failing is ErrUnavailable (the taken copy is
// kept, so the agent's resend finds it).
func (c *Coordinator) verifyDirect(ctx context.Context, agentID, buildID string, o protocol.OutputResult, scan *storepath.Scanner) (db.OutputResult, cache.Upload, error) {
	du := c.cfg.DirectUploads
	if du == nil {
		return db.OutputResult{}, nil, errors.New("reported as a direct upload, but direct uploads are off")
	}
	rep, err := parseReport(o)
	if err != nil {
		return db.OutputResult{}, nil, err
	}
	key, err := cache.DirectKey(agentID, buildID, o.Direct)
	if err != nil {
		return db.OutputResult{}, nil, err
	}
	c.mu.Lock()
	_, side := c.checks.byBuild[buildID]
	c.mu.Unlock()
	if side {
		return db.OutputResult{}, nil, fmt.Errorf("a check side's output %s cannot be a direct upload", o.Name)
	}
	taken, size, err := du.Take(ctx, key)
	if err != nil {
		err = fmt.Errorf("direct upload of %s: %w", o.Upload, err)
		if !errors.Is(err, fs.ErrNotExist) {
			// The store failing is the coordinator's trouble.
			err = unavailable(err)
		}
		return db.OutputResult{}, nil, err
	}
	drop := func(err error) (db.OutputResult, cache.Upload, error) {
		if rerr := du.Remove(context.WithoutCancel(ctx), key); rerr != nil {
			c.log.Warn("delete a refused direct upload", "build", buildID, "key", key, "err", rerr)
		}
		return db.OutputResult{}, nil, err
	}
	if size != o.FileSize {
		return drop(fmt.Errorf("file size %d, reported %d", size, o.FileSize))
	}
	obj, err := du.Open(ctx, taken)
	if err != nil {
		return db.OutputResult{}, nil, unavailable(fmt.Errorf("read direct upload %s: %w", o.Upload, err))
	}
	m, err := measureFrom(obj, o.Compression, scan)
	obj.Close()
	if err != nil {
		return db.OutputResult{}, nil, unavailable(fmt.Errorf("read direct upload %s: %w", o.Upload, err))
	}
	c.metrics.verifiedBytes.WithLabelValues("direct").Add(float64(m.FileSize))
	r, err := rep.check(m, scan)
	if err != nil {
		return drop(err)
	}
	up, err := du.AdoptObject(ctx, taken, size)
	if err != nil {
		return db.OutputResult{}, nil, unavailable(err)
	}
	return r, up, nil
}

// directReleasedLocked queues the deletion of a released build's temp
// objects (none left after a success, where they were moved or
// published). The caller holds c.mu.
func (c *Coordinator) directReleasedLocked(buildID string) {
	if c.cfg.DirectUploads == nil {
		return
	}
	c.direct.mu.Lock()
	keys := c.direct.issued[buildID]
	delete(c.direct.issued, buildID)
	c.direct.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	select {
	case c.direct.drop <- keys:
	default:
		c.log.Warn("direct upload deletions queued full; the cache's next start removes these", "build", buildID, "keys", len(keys))
	}
}

// dropDirect deletes released builds' temp objects until Close.
func (c *Coordinator) dropDirect() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case keys := <-c.direct.drop:
			for _, k := range keys {
				if err := c.cfg.DirectUploads.Remove(c.life, k); err != nil {
					c.log.Warn("delete a released build's direct upload (the cache's next start removes it)", "key", k, "err", err)
				}
			}
		}
	}
}
