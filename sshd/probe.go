package sshd

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
)

func setupProbe(fs *pflag.FlagSet) func(x *call) error {
	write := fs.Bool("write", false, "write the bytes to a scratch file beside the uploads (removed afterwards), as an upload would")
	return func(x *call) error {
		if len(x.args) != 0 {
			return usageErr("probe takes no arguments; pipe data to stdin")
		}
		var dst io.Writer = io.Discard
		if *write {
			f, err := os.CreateTemp(x.s.coord.ScratchDir(), ".probe-")
			if err != nil {
				return fmt.Errorf("scratch file: %w", err)
			}
			defer os.Remove(f.Name())
			defer f.Close()
			dst = f
		}
		t0 := time.Now()
		n, err := io.Copy(dst, x.in)
		if err != nil {
			return fmt.Errorf("read stdin after %d bytes: %w", n, err)
		}
		d := time.Since(t0)
		fmt.Fprintf(x.out, "%d bytes in %s (%.1f MB/s)\n", n, d.Round(time.Millisecond), float64(n)/1e6/max(d.Seconds(), 1e-9))
		return nil
	}
}
