package forward

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkKeySetRelay is the relay dispatcher's use: 4 job slots of up to
// 4 frames of 500 series each in flight, and each new frame checked
// against them (no overlap: distinct series).
func BenchmarkKeySetRelay(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	frame := func() []uint64 {
		k := make([]uint64, 500)
		for i := range k {
			k[i] = rng.Uint64()
		}
		return k
	}
	frames := make([][]uint64, 1024)
	for i := range frames {
		frames[i] = frame()
	}
	s := newKeySet(4)
	// Job j is frames 4j to 4j+3, in slot j%4; the slot's previous job
	// (j-4) is done before it starts.
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i / 4
		if i%4 == 0 {
			s.drop(j % 4)
		}
		f := frames[i%len(frames)]
		if s.hasAny(f) {
			b.Fatal("unexpected overlap")
		}
		s.add(j%4, f)
	}
}
