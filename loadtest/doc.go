// Package loadtest will hold Sluice's load generator and comparison
// benchmarks (SPEC section 10). Not implemented yet; the README's "Status"
// section tracks this.
package loadtest
