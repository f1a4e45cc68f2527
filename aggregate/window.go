package aggregate

import (
	"math"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/sluice-metrics/sluice/configs"
)

// windowSlots is how many slots a trailing window is cut into. A value
// pushed at time p counts until p+D at the latest and p+D-D/windowSlots at
// the earliest: a 1m window drops values in 2 s steps.
const windowSlots = 30

// sketchAccuracy is the relative accuracy of the quantile sketch: SPEC 4.1
// promises at most 1% relative error.
const sketchAccuracy = 0.01

// window keeps the statistics of the values pushed in the trailing window
// of a windowed mode, in a ring of time slots.
type window struct {
	mode  configs.Mode
	step  int64 // slot width in nanoseconds
	slots [windowSlots]slot
}

type slot struct {
	idx           int64 // absolute slot number (time/step); 0 = unused
	count         float64
	sum, min, max float64
	sketch        *ddsketch.DDSketch // only for quantile modes
}

func newWindow(m configs.Mode) *window {
	step := int64(m.Window) / windowSlots
	if step < 1 {
		step = 1
	}
	return &window{mode: m, step: step}
}

// add records v pushed at nowNanos. v must be finite.
func (w *window) add(v float64, nowNanos int64) {
	idx := nowNanos / w.step
	s := &w.slots[idx%windowSlots]
	if s.idx != idx {
		sk := s.sketch
		*s = slot{idx: idx, min: math.Inf(1), max: math.Inf(-1)}
		if w.mode.Kind == configs.ModeWindowQuantile {
			if sk != nil {
				sk.Clear()
			} else {
				// The default store grows with the value range only; errors
				// are impossible for a valid accuracy.
				sk, _ = ddsketch.NewDefaultDDSketch(sketchAccuracy)
			}
			s.sketch = sk
		}
	}
	s.count++
	s.sum += v
	s.min = math.Min(s.min, v)
	s.max = math.Max(s.max, v)
	if s.sketch != nil {
		// Add fails only for NaN/Inf, which validation rejects earlier.
		_ = s.sketch.Add(v)
	}
}

// result returns the window statistic at nowNanos, and false when nothing
// was pushed within the window.
func (w *window) result(nowNanos int64) (float64, bool) {
	cur := nowNanos / w.step
	var count, sum float64
	lo, hi := math.Inf(1), math.Inf(-1)
	var merged *ddsketch.DDSketch
	for i := range w.slots {
		s := &w.slots[i]
		if s.idx == 0 || s.idx > cur || cur-s.idx >= windowSlots {
			continue
		}
		count += s.count
		sum += s.sum
		lo, hi = math.Min(lo, s.min), math.Max(hi, s.max)
		if s.sketch != nil {
			if merged == nil {
				merged = s.sketch.Copy()
			} else if err := merged.MergeWith(s.sketch); err != nil {
				return 0, false
			}
		}
	}
	if count == 0 {
		return 0, false
	}
	switch w.mode.Kind {
	case configs.ModeWindowMean:
		return sum / count, true
	case configs.ModeWindowSum:
		return sum, true
	case configs.ModeWindowMin:
		return lo, true
	case configs.ModeWindowMax:
		return hi, true
	case configs.ModeWindowCount:
		return count, true
	case configs.ModeWindowQuantile:
		if w.mode.Quantile <= 0 {
			return lo, true
		}
		if w.mode.Quantile >= 1 {
			return hi, true
		}
		// Nearest rank: p99 is the smallest pushed value with at least 99%
		// of the pushes at or below it (so p99 of {10, 30} is 30, not 10).
		// -1e-9: 0.999 is stored as 0.99900000000000011, which must not
		// move the rank up.
		rank := max(0, math.Ceil(w.mode.Quantile*count-1e-9)-1)
		v := valueAtRank(merged, min(rank, count-1))
		// The sketch's answer is within 1% of a pushed value; clamping to
		// the exact extremes keeps p99 of [1,2,3] from reading 3.02.
		return math.Max(lo, math.Min(hi, v)), true
	}
	return 0, false
}

// valueAtRank is the value of rank k (0 for the smallest) in a sketch of
// unit counts, to the sketch's accuracy; k is a whole number below the
// count. The sketch's own GetValueAtQuantile takes a quantile and finds
// the rank from it with floating-point error, which it rounds one way for
// positive values and the other way for negative ones (kept mirrored), so
// that no nudge of the quantile is right for both.
func valueAtRank(s *ddsketch.DDSketch, k float64) float64 {
	neg := s.GetNegativeValueStore().TotalCount()
	switch {
	case k < neg:
		// Mirrored: the largest magnitudes have the smallest ranks.
		return -s.Value(s.GetNegativeValueStore().KeyAtRank(neg - 1 - k))
	case k < neg+s.GetZeroCount():
		return 0
	default:
		return s.Value(s.GetPositiveValueStore().KeyAtRank(k - neg - s.GetZeroCount()))
	}
}
