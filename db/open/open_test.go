package open

import "testing"

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		want    Target
		wantErr bool
	}{
		{"sqlite:/var/lib/gbc/gbc.db", Target{SQLite, "/var/lib/gbc/gbc.db"}, false},
		{"sqlite://rel/gbc.db", Target{SQLite, "rel/gbc.db"}, false},
		{"state/gbc.db", Target{SQLite, "state/gbc.db"}, false},
		{"postgres://u:p@h/db", Target{Postgres, "postgres://u:p@h/db"}, false},
		{"postgresql://h/db?sslmode=disable", Target{Postgres, "postgresql://h/db?sslmode=disable"}, false},
		{"", Target{}, true},
		{"sqlite:", Target{}, true},
		{"mysql://h/db", Target{}, true},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, error %v", c.in, got, err, c.want, c.wantErr)
		}
	}
	if s := (Target{Postgres, "postgres://u:secret@h:5432/db"}).String(); s != "postgres://u@h:5432/db" {
		t.Errorf("String() = %q, want the password left out", s)
	}
}
