package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlstore"
)

// insertBuilds is the dialect's InsertBuilds: each table gets one
// INSERT … SELECT FROM unnest(arrays), so a batch costs five round trips
// whatever its size. The builds are validated and unique within the batch
// (sqlstore.Store.CreateBuilds checks that first).
func insertBuilds(ctx context.Context, tx sqlstore.Tx, builds []db.NewBuild) error {
	var (
		bID, bDrv, bSys   []string
		bPrio             []int64
		bCreated, bDefer  []*int64
		bTimeout, bSilent []int64
		bInputs           []*string // NULL: inputs not recorded
		tID, tKey, tVal   []string
		tPos              []int64
		fID, fFeat        []string
		fPos              []int64
		oID, oName, oPath []string
		oPos              []int64
		eAt               []int64
		eBuild, eData     []string
	)
	for _, b := range builds {
		bID = append(bID, b.ID)
		bDrv = append(bDrv, b.Derivation)
		bSys = append(bSys, b.System)
		bPrio = append(bPrio, int64(b.Priority))
		var created *int64
		if !b.CreatedAt.IsZero() {
			v := b.CreatedAt.UnixMilli()
			created = &v
		}
		bCreated = append(bCreated, created)
		var deferUntil *int64
		if !b.DeferUntil.IsZero() {
			v := b.DeferUntil.UnixMilli()
			deferUntil = &v
		}
		bDefer = append(bDefer, deferUntil)
		bTimeout, bSilent = append(bTimeout, int64(b.TimeoutSeconds)), append(bSilent, int64(b.MaxSilentSeconds))
		var inputs *string
		if v := sqlstore.EncodeInputs(b.Derivation, b.InputDerivations); v.Valid {
			inputs = &v.String
		}
		bInputs = append(bInputs, inputs)
		for i, t := range b.Tags {
			tID, tPos, tKey, tVal = append(tID, b.ID), append(tPos, int64(i)), append(tKey, t.Key), append(tVal, t.Value)
		}
		for i, f := range b.RequiredFeatures {
			fID, fPos, fFeat = append(fID, b.ID), append(fPos, int64(i)), append(fFeat, f)
		}
		for i, o := range b.Outputs {
			oID, oName, oPos, oPath = append(oID, b.ID), append(oName, o.Name), append(oPos, int64(i)), append(oPath, o.Path)
		}
		data, err := db.EventData(sqlstore.SubmittedEvent(b))
		if err != nil {
			return fmt.Errorf("build %s: submitted event: %w", b.ID, err)
		}
		eAt, eBuild, eData = append(eAt, b.CreatedAt.UnixMilli()), append(eBuild, b.ID), append(eData, string(data))
	}
	// ORDER BY ord: seq follows the order of the batch.
	_, err := tx.ExecContext(ctx, `INSERT INTO builds (id, derivation, system, priority, state, created_at, defer_until, timeout_seconds, max_silent_seconds, input_drvs)
		SELECT id, drv, sys, prio, 'scheduled', created, defer_until, timeout, silent, inputs
		FROM unnest(?::text[], ?::text[], ?::text[], ?::int8[], ?::int8[], ?::int8[], ?::int8[], ?::int8[], ?::text[])
			WITH ORDINALITY AS t(id, drv, sys, prio, created, defer_until, timeout, silent, inputs, ord)
		ORDER BY ord`, bID, bDrv, bSys, bPrio, bCreated, bDefer, bTimeout, bSilent, bInputs)
	if isUnique(err) {
		return fmt.Errorf("build %s: %w", duplicateKey(err), db.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("inserting %d builds (first %s): %w", len(builds), builds[0].ID, err)
	}
	if len(tID) > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO build_tags (build_id, pos, key, value)
			SELECT * FROM unnest(?::text[], ?::int8[], ?::text[], ?::text[])`, tID, tPos, tKey, tVal); err != nil {
			return fmt.Errorf("inserting tags: %w", err)
		}
	}
	if len(fID) > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO build_features (build_id, pos, feature)
			SELECT * FROM unnest(?::text[], ?::int8[], ?::text[])`, fID, fPos, fFeat); err != nil {
			return fmt.Errorf("inserting features: %w", err)
		}
	}
	if len(oID) > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO build_outputs (build_id, name, pos, path)
			SELECT * FROM unnest(?::text[], ?::text[], ?::int8[], ?::text[])`, oID, oName, oPos, oPath); err != nil {
			return fmt.Errorf("inserting outputs: %w", err)
		}
	}
	// One submitted event per build, ids in batch order (see eventLock).
	if err := lockEvents(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (type, at, build_id, data)
		SELECT ?, at, build_id, data FROM unnest(?::int8[], ?::text[], ?::text[]) WITH ORDINALITY AS t(at, build_id, data, ord)
		ORDER BY ord`, string(db.EventSubmitted), eAt, eBuild, eData); err != nil {
		return fmt.Errorf("inserting submitted events: %w", err)
	}
	return nil
}

// duplicateKey pulls the value out of a unique violation's detail
// ("Key (id)=(b1) already exists."), so the error names the build.
func duplicateKey(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if _, rest, ok := strings.Cut(pe.Detail, ")=("); ok {
			if v, _, ok := strings.Cut(rest, ") already exists"); ok {
				return v
			}
		}
	}
	return "(unknown id)"
}
