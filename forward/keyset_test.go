package forward

import (
	"math/rand/v2"
	"testing"
)

// TestKeySetMatchesAMap runs random adds and removes, with keys chosen to
// collide in the table (few distinct low bits) and the key 0, against a
// map of counts.
func TestKeySetMatchesAMap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keys  int    // distinct keys drawn from
		batch int    // keys per add
		shift uint64 // keys are i<<shift: collide in slots when large
	}{
		{name: "spread", keys: 5000, batch: 500},
		{name: "clustered", keys: 300, batch: 40, shift: 40},
		{name: "tiny", keys: 3, batch: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.keys)))
			var s keySet
			want := map[uint64]int{}
			var held [][]uint64
			for step := range 3000 {
				if len(held) > 0 && (rng.IntN(2) == 0 || len(held) > 6) {
					i := rng.IntN(len(held))
					s.remove(held[i])
					for _, k := range held[i] {
						if want[norm(k)]--; want[norm(k)] == 0 {
							delete(want, norm(k))
						}
					}
					held = append(held[:i], held[i+1:]...)
				} else {
					b := make([]uint64, 1+rng.IntN(tc.batch))
					for i := range b {
						b[i] = uint64(rng.IntN(tc.keys)) << tc.shift
					}
					s.add(b)
					for _, k := range b {
						want[norm(k)]++
					}
					held = append(held, b)
				}
				if s.len() != len(want) {
					t.Fatalf("step %d: %d keys held, want %d", step, s.len(), len(want))
				}
				probe := uint64(rng.IntN(tc.keys+10)) << tc.shift
				if got := s.hasAny([]uint64{probe}); got != (want[norm(probe)] > 0) {
					t.Fatalf("step %d: hasAny(%#x) = %v, want %v", step, probe, got, !got)
				}
			}
			for _, b := range held {
				s.remove(b)
			}
			if s.len() != 0 || s.hasAny([]uint64{0, 1, 2, 1 << tc.shift}) {
				t.Fatalf("not empty after removing everything: %d keys", s.len())
			}
		})
	}
}

func TestKeySetRemoveUnknownKey(t *testing.T) {
	var s keySet
	s.remove([]uint64{7})
	s.add([]uint64{7, 7, 9})
	s.remove([]uint64{8, 7})
	if !s.hasAny([]uint64{7}) || !s.hasAny([]uint64{9}) || s.hasAny([]uint64{8}) {
		t.Fatal("removing one of two 7s, and an 8 never added, changed what else is held")
	}
	s.remove([]uint64{7})
	if s.hasAny([]uint64{7}) {
		t.Fatal("7 still held after both were removed")
	}
}
