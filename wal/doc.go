// Package wal is Sluice's segmented write-ahead log (SPEC section 7),
// modelled on Prometheus' tsdb/wlog. FORMAT.md describes the bytes on disk,
// why this is not tsdb/wlog itself, and what each sync mode guarantees.
//
// # Use
//
// At start-up: ReadCheckpoint (the newest aggregate state and the position
// it covers), Open (which repairs a torn or corrupt tail and never refuses
// to start because of bad bytes), Replay from the checkpoint's position.
// Then Append each operation before acknowledging it. Periodically: Cut,
// snapshot the state, WriteCheckpoint at the cut position, TruncateBefore
// it. Close at shutdown.
//
// # Records
//
// A Record is a type byte (0 is reserved) and opaque data. One Append
// writes its records as one batch with one CRC32-C: after a crash either
// the whole batch is replayed or none of it. Batches never span segments,
// so whole segments can be deleted once a checkpoint covers them.
//
// # Concurrency and durability
//
// Append is safe for concurrent use. In SyncAlways mode (the default) it
// returns only after its batch is fsynced; concurrent Appends share one
// write and one fsync (group commit), so throughput grows with the number
// of appenders while each fsync stays a single disk flush. In SyncInterval
// mode Append returns after write(2) and a goroutine fsyncs every
// interval. A failed write or fsync is returned to every appender of the
// batches in it; the segment is truncated back to its last complete batch,
// and if even that fails the WAL refuses further Appends (Err reports why).
//
// Replay hands each record's Data to the callback only until it returns:
// copy what you keep.
package wal
