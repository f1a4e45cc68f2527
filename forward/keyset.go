package forward

// keySet holds the series keys (wireInfo.keys) of the whole frames in
// flight (whole.go), each request under the job slot it was sent from, so
// that the dispatcher can tell whether a frame shares a series with one of
// them. Two series whose keys collide only make a frame wait, which never
// breaks the order of a series' samples.
//
// An open-addressing table with linear probing whose entries carry their
// job slot and its generation: dropping a slot's keys when its request is
// resolved is one increment, and the dead entries are reused by later
// inserts or cleared by a rebuild once half the table is taken. A frame of
// 500 series is checked and added in a few microseconds, less than a Go
// map would take for the removals alone. Not safe for concurrent use; the
// dispatcher owns it.
type keySet struct {
	table []keyEntry // len is a power of two, or 0
	used  int        // entries not empty, live or dead
	gen   []uint32   // per job slot: the generation of its live entries
	keys  [][][]uint64
	live  int // keys held by the job slots
}

type keyEntry struct {
	key  uint64 // 0: empty
	slot uint32
	gen  uint32
}

// minKeyTable is the smallest table; a rebuild sizes it at 8 entries per
// live key, so rebuilds come after several frames.
const minKeyTable = 1024

func newKeySet(slots int) *keySet {
	return &keySet{gen: make([]uint32, slots), keys: make([][][]uint64, slots)}
}

// norm maps the key 0, which marks an empty entry, to 1.
func norm(k uint64) uint64 {
	if k == 0 {
		return 1
	}
	return k
}

// hasAny reports whether any of keys is held.
func (s *keySet) hasAny(keys []uint64) bool {
	if s.live == 0 {
		return false
	}
	mask := uint64(len(s.table) - 1)
	for _, k := range keys {
		k = norm(k)
		for i := k & mask; s.table[i].key != 0; i = (i + 1) & mask {
			if e := &s.table[i]; e.key == k && e.gen == s.gen[e.slot] {
				return true
			}
		}
	}
	return false
}

// add holds keys under job slot slot until drop(slot). keys is kept (for
// a rebuild), not copied.
func (s *keySet) add(slot int, keys []uint64) {
	s.keys[slot] = append(s.keys[slot], keys)
	s.live += len(keys)
	if 2*(s.used+len(keys)) > len(s.table) {
		s.rebuild() // with keys
		return
	}
	s.insert(slot, keys)
}

// drop forgets every key held under slot.
func (s *keySet) drop(slot int) {
	s.gen[slot]++
	for _, k := range s.keys[slot] {
		s.live -= len(k)
	}
	clear(s.keys[slot])
	s.keys[slot] = s.keys[slot][:0]
}

// insert writes keys into the first empty or dead entry of each one's
// probe sequence.
func (s *keySet) insert(slot int, keys []uint64) {
	mask := uint64(len(s.table) - 1)
	gen := s.gen[slot]
	for _, k := range keys {
		k = norm(k)
		i := k & mask
		for {
			e := &s.table[i]
			if e.key == 0 {
				s.used++
				break
			}
			if e.gen != s.gen[e.slot] {
				break // dead: reuse it
			}
			i = (i + 1) & mask
		}
		s.table[i] = keyEntry{key: k, slot: uint32(slot), gen: gen}
	}
}

// rebuild clears the table (growing it if the live keys need it) and
// inserts the live keys again.
func (s *keySet) rebuild() {
	size := max(len(s.table), minKeyTable)
	for size < 8*s.live {
		size *= 2
	}
	if size != len(s.table) {
		s.table = make([]keyEntry, size)
	} else {
		clear(s.table)
	}
	s.used = 0
	for slot, lists := range s.keys {
		for _, keys := range lists {
			s.insert(slot, keys)
		}
	}
}
