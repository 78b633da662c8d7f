package coordproc

import "testing"

func TestParseIO(t *testing.T) {
	got, err := parseIO("rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 4096\n")
	if err != nil || got != 8192 {
		t.Fatalf("parseIO = %d, %v; want 8192", got, err)
	}
	if _, err := parseIO("rchar: 10\n"); err == nil {
		t.Fatal("parseIO without write_bytes: no error")
	}
}
