package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"time"
)

// HTTPClient is the client direct uploads PUT with: connecting and the
// store's answer after the last byte are bounded, the body is not (a PUT
// of gigabytes takes what it takes; the caller's context ends it).
func HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}}
}

// Put sends the local file with one HTTP PUT to url (a presigned object
// store URL) and returns its size. Any answer but 200 is an error naming
// the status and the start of the store's message.
func Put(ctx context.Context, hc *http.Client, url, local string) (int64, error) {
	f, err := os.Open(local)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", local, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", local, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, io.NopCloser(f))
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", local, err)
	}
	req.ContentLength = st.Size()
	if st.Size() == 0 {
		req.Body = http.NoBody
	}
	// Rewindable for the transport's retry of a request on a reused
	// connection that the server had closed.
	req.GetBody = func() (io.ReadCloser, error) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return io.NopCloser(f), nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		// Not the URL: it is a credential until it expires.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("put %s (%d bytes) to %s: %w", local, st.Size(), req.URL.Host, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("put %s (%d bytes): %s: %q", local, st.Size(), resp.Status, msg)
	}
	return st.Size(), nil
}
