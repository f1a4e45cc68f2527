package aggregate

import (
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/configs"
)

// A Shape remembers what the store made of a push (its updates: series
// keys, modes, types, metadata) so that a later push with the very same
// families, changed only in their values, is checked and converted by its
// values alone. ingest's decoder gives a repeated push exactly that:
// the families of the push before, refilled in place.
//
// The caller owns a Shape and uses it for one push at a time. It must Reset
// it whenever a push's families are not the objects, with the same names,
// labels, metadata and types, of the push the Shape was filled from; only
// the values may differ. The Shape points into those families (their
// metrics, and names and help texts in their memory), so they must not be
// reused for other content while it is filled: Apply cannot tell. Apply fills a Shape from a push it prepares in
// full, and prepares in full whenever anything else differs from the push
// it was filled from: the settings (a reload), the method, the grouping
// key or clear_mode of the path, or any value the shortcut cannot take (it
// then gives the full preparation's answer, error message and all).
type Shape struct {
	set          *Settings
	method       Method
	mode         string
	group        labels.Labels
	typeHint     bool
	groupKey     string
	semantics    Semantics
	replaceAll   bool
	replaceNames map[string]bool
	timestamps   int
	// updates are the push's, without their observations; their keys
	// point into arena.
	updates []update
	modes   []configs.Mode
	arena   []byte
	filled  bool
}

// Reset forgets the push the Shape was filled from, keeping its memory.
func (sh *Shape) Reset() {
	clear(sh.updates)
	*sh = Shape{updates: sh.updates[:0], modes: sh.modes[:0], arena: sh.arena[:0]}
}

// fill remembers pr, just prepared in full from p under set (before
// applyLocked changes anything of it).
func (sh *Shape) fill(pr *prepared, p *Push, set *Settings) {
	sh.set, sh.method, sh.mode, sh.group, sh.typeHint = set, p.Method, p.Mode, p.Group, p.TypeHint
	sh.groupKey, sh.semantics, sh.replaceAll, sh.replaceNames, sh.timestamps = pr.groupKey, pr.semantics, pr.replaceAll, pr.replaceNames, pr.timestamps
	// The keys are copied out of pr's arena, which the next push
	// overwrites; sh's own is written only here, when no push uses it.
	sh.arena = append(sh.arena[:0], pr.arena...)
	keys := unsafe.String(unsafe.SliceData(sh.arena), len(sh.arena))
	clear(sh.updates)
	sh.updates = append(sh.updates[:0], pr.updates...)
	for i := range sh.updates {
		u := &sh.updates[i]
		u.key, u.obs = keys[u.k0:u.k1], observation{}
	}
	sh.modes = append(sh.modes[:0], pr.modes...)
	sh.filled = true
}

// prepareShaped prepares p by its values alone when sh was filled from a
// push like it (see Shape), and returns nil otherwise or when a value
// fails a check: prepareFull then gives the answer.
func (s *Store) prepareShaped(p *Push, sh *Shape, set *Settings) *prepared {
	if !sh.filled || sh.set != set || sh.method != p.Method || sh.mode != p.Mode || sh.typeHint != p.TypeHint || !labels.Equal(sh.group, p.Group) {
		return nil
	}
	pr := s.newPrepared()
	pr.groupKey, pr.group, pr.semantics, pr.typeHint = sh.groupKey, p.Group, sh.semantics, p.TypeHint
	pr.replaceAll, pr.replaceNames, pr.timestamps = sh.replaceAll, sh.replaceNames, sh.timestamps
	pr.updates = append(pr.updates[:0], sh.updates...)
	pr.modes = append(pr.modes[:0], sh.modes...)
	nSeries := 0
	for i := range pr.updates {
		u := &pr.updates[i]
		obs, quants, err := observe(u.name, func() labels.Labels { return u.labelSet(p.Group) }, u.typ, u.mode, u.m)
		if err != nil {
			s.releasePrepared(pr)
			return nil
		}
		nSeries += 1 + int(exposedExtra(obs.hist, obs.summ))
		if nSeries > set.Limits.MaxSeriesPerRequest {
			s.releasePrepared(pr)
			return nil
		}
		pr.droppedQuants += quants
		u.obs = obs
	}
	return pr
}
