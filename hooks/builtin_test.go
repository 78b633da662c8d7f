package hooks

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

type submitted struct {
	drvs []string
	prio int
	tags []db.Tag
}

// fakeSubmit records submissions as builds in the store, as the
// coordinator would.
func fakeSubmit(st interface {
	CreateBuilds(context.Context, []db.NewBuild) error
}, log *[]submitted, fail error) SubmitFunc {
	n := 0
	return func(ctx context.Context, drvs []string, prio int, tags []db.Tag) ([]string, error) {
		if fail != nil {
			return nil, fail
		}
		*log = append(*log, submitted{drvs, prio, tags})
		var ids []string
		for _, d := range drvs {
			n++
			id := "sub-" + string(rune('a'+n))
			if err := st.CreateBuilds(ctx, []db.NewBuild{{ID: id, Derivation: d, System: "x86_64-linux", Priority: prio, Tags: tags, CreatedAt: time.Now()}}); err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		return ids, nil
	}
}

func TestRetryFailed(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	st.CreateAgent(ctx, db.Agent{ID: "a", Name: "a", Active: true})
	drv := "/nix/store/aaaa-x.drv"
	st.CreateBuilds(ctx, []db.NewBuild{{ID: "orig", Derivation: drv, System: "x86_64-linux", Priority: 7, Tags: []db.Tag{{Key: "jobset", Value: "j"}}}})
	var subs []submitted
	h := RetryFailed(2, fakeSubmit(st, &subs, nil), st, nil)
	ev := db.Event{Type: db.EventFailed, Build: "orig"}
	for i := 0; i < 2; i++ { // at least once: the second run must not resubmit
		if err := h(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if len(subs) != 1 || subs[0].prio != 7 || len(subs[0].tags) != 3 ||
		subs[0].tags[1] != (db.Tag{Key: db.TagRetry, Value: "1"}) || subs[0].tags[2] != (db.Tag{Key: db.TagRetryOf, Value: "orig"}) {
		t.Fatalf("submissions %+v", subs)
	}
	bs, _ := st.Builds(ctx, db.BuildFilter{Derivation: drv})
	retry1 := bs[0].ID
	if err := h(ctx, db.Event{Type: db.EventFailed, Build: retry1}); err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 || subs[1].tags[1] != (db.Tag{Key: db.TagRetry, Value: "2"}) || subs[1].tags[2] != (db.Tag{Key: db.TagRetryOf, Value: retry1}) {
		t.Fatalf("second retry %+v", subs)
	}
	bs, _ = st.Builds(ctx, db.BuildFilter{Derivation: drv})
	if err := h(ctx, db.Event{Type: db.EventFailed, Build: bs[0].ID}); err != nil || len(subs) != 2 {
		t.Fatalf("retry beyond the limit: %v, %d submissions", err, len(subs))
	}
	bad := errors.New("cannot read")
	h = RetryFailed(2, fakeSubmit(st, &subs, bad), st, func(err error) bool { return errors.Is(err, bad) })
	st.CreateBuilds(ctx, []db.NewBuild{{ID: "other", Derivation: "/nix/store/bbbb-y.drv", System: "x86_64-linux"}})
	var perm *permanentError
	if err := h(ctx, db.Event{Type: db.EventFailed, Build: "other"}); !errors.As(err, &perm) {
		t.Errorf("unreadable derivation: %v, want a permanent error", err)
	}
}
