package ingest

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluice-metrics/sluice/aggregate"
)

// A job pushes the same metrics again and again with new values: the same
// bytes but for the number on each sample line. Sluice keeps, per push
// route (method and path), the decoder of the last push to it, text or
// protobuf, and parses the next one by its values alone when that is all
// that changed (textParser.refill); the store then skips the checks of everything but
// the values (aggregate.Shape). It is the idea of Prometheus' scrape cache,
// which maps a sample line's bytes to its series, applied to a whole body.

// valueSlot is where the value of one sample line went: the value's bytes
// in the body, and the field that holds it.
type valueSlot struct {
	start, end int
	kind       slotKind
	f          *float64
	u          *uint64
}

type slotKind uint8

const (
	slotFloat        slotKind = iota // a float field (f)
	slotCount                        // a histogram count or bucket, a whole number (u)
	slotSummaryCount                 // a summary's _count (u)
	slotIgnored                      // a line the families do not show (a histogram's bare name)
	slotFixed64                      // protobuf: a double (f), 8 bytes
	slotVarint                       // protobuf: a count (u), a varint
)

// set writes v where the parse put the slot's value, converting it as the
// parse did (textParser.sample). It reports false, writing nothing, where
// the parse would have made something else of v: a fractional count is a
// float count, a negative summary count an error.
func (s *valueSlot) set(v float64) bool {
	switch s.kind {
	case slotFloat:
		*s.f = v
	case slotCount:
		u := uint64(v)
		if v != float64(u) {
			return false
		}
		*s.u = u
	case slotSummaryCount:
		if !isCount(v) {
			return false
		}
		*s.u = uint64(v)
	}
	return true
}

// take reads the slot's new value at the start of b, writes it as set
// does, and returns the bytes the value took; -1 where the parse would
// have made something else of it. A text value runs to the next blank or
// newline; a protobuf double takes 8 bytes, and a count a varint as long
// as the one before it, so that every message and field stays where it
// was.
func (s *valueSlot) take(b []byte) int {
	switch s.kind {
	case slotFixed64:
		if len(b) < 8 {
			return -1
		}
		*s.f = math.Float64frombits(binary.LittleEndian.Uint64(b))
		return 8
	case slotVarint:
		u, n := protowire.ConsumeVarint(b)
		if n != s.end-s.start {
			return -1
		}
		*s.u = u
		return n
	}
	e := 0
	for e < len(b) && b[e] != ' ' && b[e] != '\t' && b[e] != '\n' {
		e++
	}
	v, ok := parseTextFloat(unsafe.String(unsafe.SliceData(b), e))
	if !ok || !s.set(v) {
		return -1
	}
	return e
}

// refill parses body when it is the body of p's last successful parse
// (parseBody, or parseProto if proto) with other sample values: the same
// bytes everywhere but in each value, each still one the parse converts as
// before (take). It writes the new values where the parse put the old ones
// and reports true: the families p returned are then exactly what the
// parse makes of body (FuzzRefillMatchesParse, FuzzRefillProtoMatchesParse).
// Otherwise it reports false, and p must be reset (a parse does) before
// its families are used again: some values may be written.
//
// Why the same bytes parse the same: nothing the parse does depends on a
// value but the field the value goes to. The bytes before each value match
// those of the last body, so the value starts where the last one did. In
// text the parse reads a value up to the next blank or newline, and the
// bytes after it start with one in the last body and must match too, so
// it ends where the parse would end it; in protobuf its length is fixed.
func (p *textParser) refill(body []byte, proto bool) bool {
	if !p.parsed || p.proto != proto || p.shapeless || len(p.slots) == 0 {
		return false
	}
	last := p.buf
	prev, n := 0, 0 // the end of the last value in last and in body
	for i := range p.slots {
		sl := &p.slots[i]
		lit := last[prev:sl.start]
		if len(body)-n < len(lit) || !bytes.Equal(body[n:n+len(lit)], lit) {
			return false
		}
		n += len(lit)
		m := sl.take(body[n:])
		if m < 0 {
			return false
		}
		n, prev = n+m, sl.end
	}
	return bytes.Equal(body[n:], last[prev:])
}

// maxShapeBody is the largest body whose decoder a route keeps: larger
// pushes are rarer, and their decoders large.
const maxShapeBody = 64 << 10

// shapeCache holds, per push route, the scratch of the last push to
// it that can serve as a template (Decoder.shaped). A scratch is taken out
// while a push uses it, so each is used by one push at a time; a second
// push to the same route meanwhile decodes in full with a scratch of its
// own, and the last to finish stays.
//
// A route's scratch is kept from its second push on: a job that pushes
// once (a function whose instance label is new on every run, say) would
// only churn the cache. seen remembers the hashes of routes pushed once,
// each in one of its slots, the newest winning.
type shapeCache struct {
	mu         sync.Mutex
	m          map[string]*pushScratch
	bytes      int
	maxEntries int
	maxBytes   int
	seed       maphash.Seed
	seen       []atomic.Uint64
}

// seenSlots is the number of routes pushed once that the cache remembers
// (512 KiB).
const seenSlots = 1 << 16

func newShapeCache(maxEntries, maxBytes int) *shapeCache {
	return &shapeCache{m: make(map[string]*pushScratch), maxEntries: maxEntries, maxBytes: maxBytes,
		seed: maphash.MakeSeed(), seen: make([]atomic.Uint64, seenSlots)}
}

// again reports whether route was pushed before (as far as the cache
// remembers), and remembers it.
func (c *shapeCache) again(route []byte) bool {
	h := maphash.Bytes(c.seed, route) | 1 // never 0, an empty slot
	slot := &c.seen[h%uint64(len(c.seen))]
	return slot.Swap(h) == h
}

// take returns the scratch kept for route, removed from the cache, or nil.
func (c *shapeCache) take(route []byte) *pushScratch {
	c.mu.Lock()
	ps := c.m[string(route)]
	if ps != nil {
		delete(c.m, ps.route)
		c.bytes -= ps.cost
	}
	c.mu.Unlock()
	return ps
}

// maxEvict bounds the scratches one put evicts, so that it does a bounded
// amount of work; the cache stays within its bounds but for a few entries.
const maxEvict = 4

// put keeps ps under ps.route and returns the scratches it no longer
// keeps: one it replaced, and any it evicted (at random) to stay within
// its bounds. The caller releases them.
func (c *shapeCache) put(ps *pushScratch) (out [maxEvict + 1]*pushScratch, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[ps.route]; old != nil {
		out[n] = old
		n++
		c.bytes -= old.cost
	}
	c.m[ps.route] = ps
	c.bytes += ps.cost
	for k, v := range c.m {
		if n == len(out) || (len(c.m) <= c.maxEntries && c.bytes <= c.maxBytes) {
			break
		}
		if v == ps {
			continue
		}
		delete(c.m, k)
		c.bytes -= v.cost
		out[n] = v
		n++
	}
	return out, n
}

// len returns the number of routes kept.
func (c *shapeCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// scratchCost estimates the memory a kept scratch holds: the parser's copy
// of the body and, per sample line, the parser's metric, label pairs and
// values (about 430 bytes with two labels) and the store's update (about
// 230), as a heap profile of kept 100-line pushes shows.
func scratchCost(ps *pushScratch) int {
	return 2*cap(ps.dec.text.buf) + 640*len(ps.dec.text.slots) + 2048
}

// routeKey appends a push's route, its method and raw path, to dst.
func routeKey(dst []byte, method string, path []byte) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	return append(dst, path...)
}

// cachedGroup is a route's grouping key as doPush parsed it.
type cachedGroup struct {
	labels labels.Labels
	mode   string
}

// shapeOf is the aggregate.Shape for the push ps decoded: the scratch's
// own while its decoder holds a template, which the store fills; nil
// otherwise.
func shapeOf(ps *pushScratch) *aggregate.Shape {
	if !ps.dec.shaped {
		return nil
	}
	return &ps.shape
}
