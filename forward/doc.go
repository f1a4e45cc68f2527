// Package forward will hold Sluice's remote_write client and per-target
// queues (SPEC section 6).
//
// Not implemented yet: today aggregated series are only exposed on
// GET /metrics. The README's "Status" section tracks this.
package forward
