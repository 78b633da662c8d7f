package sqlstore

import (
	"context"
	"fmt"

	"github.com/gbc-farm/gbc/db"
)

// phaseColumn is the attempts column holding when an attempt entered a
// phase that is recorded by a mark; "" for PhaseBuilding (started_at,
// written by the start) and for strings that are not phases.
func phaseColumn(p db.Phase) string {
	switch p {
	case db.PhasePreparing:
		return "preparing_at"
	case db.PhaseUploading:
		return "uploading_at"
	case db.PhaseVerifying:
		return "verifying_at"
	case db.PhasePublishing:
		return "publishing_at"
	}
	return ""
}

// RecordPhases writes every mark in one background transaction: one
// UPDATE per mark, each statement prepared once, and a recorded phase is
// never overwritten (the IS NULL guard).
func (s *Store) RecordPhases(ctx context.Context, marks []db.PhaseMark) error {
	if len(marks) == 0 {
		return nil
	}
	for i, m := range marks {
		if phaseColumn(m.Phase) == "" {
			return fmt.Errorf("recording phases: marks[%d] (build %s): phase %q is not one a mark records", i, m.Build, m.Phase)
		}
		if m.Build == "" || m.Attempt < 1 {
			return fmt.Errorf("recording phases: marks[%d]: build %q attempt %d", i, m.Build, m.Attempt)
		}
	}
	err := s.writeBackground(ctx, func(tx Tx) error {
		for _, m := range marks {
			col := phaseColumn(m.Phase)
			q := `UPDATE attempts SET ` + col + ` = ? WHERE build_id = ? AND number = ? AND ` + col + ` IS NULL`
			if _, err := tx.ExecContext(ctx, q, ms(m.At), m.Build, m.Attempt); err != nil {
				return fmt.Errorf("build %s attempt %d %s: %w", m.Build, m.Attempt, m.Phase, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording %d phase marks: %w", len(marks), err)
	}
	return nil
}
