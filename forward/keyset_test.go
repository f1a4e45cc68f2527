package forward

import (
	"math/rand/v2"
	"testing"
)

// TestKeySetMatchesAMap adds keys under job slots and drops slots at
// random, with keys chosen to collide in the table (few distinct low
// bits) and the key 0, and checks every answer against a plain map.
func TestKeySetMatchesAMap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keys  int    // distinct keys drawn from
		batch int    // keys per add
		shift uint64 // keys are i<<shift: collide in the table when large
	}{
		{name: "spread", keys: 5000, batch: 500},
		{name: "clustered", keys: 300, batch: 40, shift: 40},
		{name: "tiny", keys: 3, batch: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const slots = 4
			rng := rand.New(rand.NewPCG(1, uint64(tc.keys)))
			s := newKeySet(slots)
			held := make([]map[uint64]int, slots) // per slot: key -> count
			for i := range held {
				held[i] = map[uint64]int{}
			}
			want := func(k uint64) bool {
				for _, m := range held {
					if m[norm(k)] > 0 {
						return true
					}
				}
				return false
			}
			for step := range 5000 {
				slot := rng.IntN(slots)
				if rng.IntN(3) == 0 {
					s.drop(slot)
					clear(held[slot])
				} else {
					b := make([]uint64, 1+rng.IntN(tc.batch))
					for i := range b {
						b[i] = uint64(rng.IntN(tc.keys)) << tc.shift
					}
					s.add(slot, b)
					for _, k := range b {
						held[slot][norm(k)]++
					}
				}
				for range 3 {
					probe := uint64(rng.IntN(tc.keys+10)) << tc.shift
					if got := s.hasAny([]uint64{probe}); got != want(probe) {
						t.Fatalf("step %d: hasAny(%#x) = %v, want %v", step, probe, got, !got)
					}
				}
			}
			for slot := range slots {
				s.drop(slot)
			}
			if s.live != 0 || s.hasAny([]uint64{0, 1, 2, 1 << tc.shift}) {
				t.Fatalf("keys held after every slot was dropped: %d", s.live)
			}
		})
	}
}
