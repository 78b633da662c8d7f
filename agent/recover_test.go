package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/protocol"
)

func TestLoadUploadState(t *testing.T) {
	good := func(dir string) {
		b := &protocol.Build{Build: filepath.Base(dir), Derivation: "/nix/store/x.drv", UploadDir: "/uploads/" + filepath.Base(dir)}
		if err := os.WriteFile(filepath.Join(dir, "out.nar.zst"), []byte("nar"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := saveUploadState(dir, b, []protocol.OutputResult{{Name: "out", Upload: "out.nar.zst"}}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		setup func(dir string)
		want  string // "" means loads
	}{
		{"saved", good, ""},
		{"no state", func(string) {}, "no such file"},
		{"garbage", func(dir string) { os.WriteFile(filepath.Join(dir, uploadStateFile), []byte("{"), 0o644) }, "upload.json"},
		{"other build", func(dir string) {
			good(dir)
			b, _ := os.ReadFile(filepath.Join(dir, uploadStateFile))
			os.WriteFile(filepath.Join(dir, uploadStateFile), []byte(strings.Replace(string(b), `"build":"`+filepath.Base(dir), `"build":"other`, 1)), 0o644)
		}, "does not describe"},
		{"packed file gone", func(dir string) { good(dir); os.Remove(filepath.Join(dir, "out.nar.zst")) }, "no such file"},
		{"path in upload name", func(dir string) {
			b := &protocol.Build{Build: filepath.Base(dir), UploadDir: "/uploads/x"}
			saveUploadState(dir, b, []protocol.OutputResult{{Name: "out", Upload: "../../etc/passwd"}})
		}, "upload name"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b"+string(rune('0'+i)))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			c.setup(dir)
			st, err := loadUploadState(dir, filepath.Base(dir))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("load: %v", err)
			case c.want == "" && (st.Build.Build != filepath.Base(dir) || len(st.Outputs) != 1):
				t.Fatalf("loaded %+v", st)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}
