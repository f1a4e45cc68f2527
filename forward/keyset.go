package forward

// keySet is a multiset of series keys (64-bit hashes of a series' labels
// as encoded in a relay frame): the series of the whole frames in flight
// (whole.go). An open-addressing table with linear probing and
// backward-shift deletion: a relay frame of 500 series is checked, added
// and removed in a few microseconds, a fraction of what a Go map costs
// per key. Two series whose keys collide only make a frame wait, which
// never breaks the order of a series' samples. Not safe for concurrent
// use; the dispatcher owns it.
type keySet struct {
	slots []keySlot // len is a power of two, or 0
	n     int       // distinct keys held
}

type keySlot struct {
	key   uint64 // 0: empty
	count uint32
}

// norm maps the key 0, which marks an empty slot, to 1.
func norm(k uint64) uint64 {
	if k == 0 {
		return 1
	}
	return k
}

func (s *keySet) len() int { return s.n }

// hasAny reports whether any of keys is in the set.
func (s *keySet) hasAny(keys []uint64) bool {
	if s.n == 0 {
		return false
	}
	mask := uint64(len(s.slots) - 1)
	for _, k := range keys {
		k = norm(k)
		for i := k & mask; s.slots[i].key != 0; i = (i + 1) & mask {
			if s.slots[i].key == k {
				return true
			}
		}
	}
	return false
}

// add adds each of keys once (a key given twice is held twice).
func (s *keySet) add(keys []uint64) {
	if need := 2 * (s.n + len(keys)); need > len(s.slots) {
		s.grow(need)
	}
	mask := uint64(len(s.slots) - 1)
	for _, k := range keys {
		k = norm(k)
		i := k & mask
		for s.slots[i].key != 0 && s.slots[i].key != k {
			i = (i + 1) & mask
		}
		if s.slots[i].key == 0 {
			s.slots[i].key = k
			s.n++
		}
		s.slots[i].count++
	}
}

// remove takes each of keys out once; keys not held are ignored.
func (s *keySet) remove(keys []uint64) {
	if s.n == 0 {
		return
	}
	mask := uint64(len(s.slots) - 1)
	for _, k := range keys {
		k = norm(k)
		i := k & mask
		for s.slots[i].key != 0 && s.slots[i].key != k {
			i = (i + 1) & mask
		}
		if s.slots[i].key == 0 {
			continue
		}
		if s.slots[i].count--; s.slots[i].count > 0 {
			continue
		}
		// Backward-shift deletion: move up every later key of the
		// cluster whose home slot is not between the hole and it.
		s.n--
		hole := i
		for j := (i + 1) & mask; s.slots[j].key != 0; j = (j + 1) & mask {
			home := s.slots[j].key & mask
			if (j-home)&mask >= (j-hole)&mask {
				s.slots[hole] = s.slots[j]
				hole = j
			}
		}
		s.slots[hole] = keySlot{}
	}
}

// grow rehashes into a table of at least n slots.
func (s *keySet) grow(n int) {
	size := max(len(s.slots), 64)
	for size < n {
		size *= 2
	}
	old := s.slots
	s.slots, s.n = make([]keySlot, size), 0
	mask := uint64(size - 1)
	for _, sl := range old {
		if sl.key == 0 {
			continue
		}
		i := sl.key & mask
		for s.slots[i].key != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = sl
		s.n++
	}
}
