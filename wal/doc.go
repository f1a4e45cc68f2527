// Package wal will hold Sluice's segmented write-ahead log (SPEC section 7).
//
// Not implemented yet: today an acknowledged push lives only in memory and
// is lost on a crash. The README's "Status" section tracks this.
package wal
