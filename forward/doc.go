// Package forward sends Sluice's output to long-term stores with Prometheus
// remote_write (SPEC sections 6 and 7): one persistent queue per target on
// disk, sharded concurrent senders, batching, Remote-Write 1.0 and 2.0,
// retries.
//
// # Data flow
//
// The aggregator hands each window to Manager.Append, and the Store each
// remote_write request's relayed series to Manager.AppendWire (which
// reads them during the call only: they point into the decoder's pooled
// request), both decoded and as the request's protobuf bytes. A
// Remote-Write 1.0 target without external labels and
// write_relabel_configs changes nothing in relayed series: it writes the
// request's snappy block to its backlog as it came (a relay frame, below)
// and its shards copy each series' encoded labels from the request's
// bytes, so relaying never decodes a label into a string, builds
// labels.Labels, or compresses for the backlog. Other targets take the
// decoded series as they take a window. Append finds each series' metadata once, then for every
// target adds the external labels a series lacks (merged while the
// record is written, without building labels.Labels, unless
// write_relabel_configs need them), applies write_relabel_configs and
// writes the window as one frame to the target's backlog, a log of
// frames on disk. It never waits for the
// network; the disk write is the only I/O it does, and it never fsyncs.
// Each target has a dispatcher goroutine that reads its backlog in order
// and hands each sample to the shard of its series; the shards send. The
// last frames appended (up to 4 MiB of payload per target) are also kept
// in memory, so a target that keeps up takes them from there instead of
// reading them back; they are on disk all the same, and the cursor moves
// exactly as for a frame read from disk. Once
// every sample of a frame is resolved (accepted with a 2xx, or dropped for
// good after a non-retryable answer) and so is every frame before it, the
// dispatcher moves the backlog's read cursor past it. While a target is
// down, windows wait on disk; one target's backlog never holds up another.
//
// # Backlog files
//
// NewManager's directory (the binary passes <wal.dir>/queues) holds one
// directory per target, named after its DisplayName (bytes other than
// letters, digits, '-', '_' and '.' become '_', and a name so changed, or
// longer than 64 bytes, gets an FNV-32a hash of the exact name appended so
// that two targets never share a directory):
//
//	queues/<target>/00000000       segment 0 (eight digits, as in the WAL)
//	queues/<target>/00000001       the segment appended to (always the highest)
//	queues/<target>/cursor         the persisted read cursor
//	queues/<target>/cursor.tmp     only after a crash while writing the cursor; removed on open
//	queues/<target>/coalesce.tmp   only after a crash while coalescing; removed on open
//
// A segment is a sequence of frames, one per window, with no header or
// padding. A frame never spans segments; a segment takes frames until the
// next does not fit in max_backlog_bytes/16 (at most 8 MiB, at least 64
// bytes; a larger frame gets a segment of its own), so that sent segments
// are deleted whole and coalescing works on whole segments. The framing is
// the WAL's (wal/FORMAT.md), with its own payload:
//
//	frame    type <1b> = 1 | payload length <4b> | CRC32-C <4b> | payload
//	payload  samples <uvarint> | lowest timestamp <varint> | snappy block of the body
//	         or, a relay frame: 0x00 | samples <uvarint> | lowest timestamp <varint> |
//	         snappy block of a prometheus.WriteRequest (the remote_write body)
//	body     series records, back to back, to the end
//	record   metadata <uvarint> | labels <uvarint n> (name <str>, value <str>) x n |
//	         floats <uvarint n> (timestamp <varint>, value <8b, little endian bits>) x n |
//	         histograms <uvarint n> (length <uvarint>, prompb.Histogram protobuf) x n
//	str      length <uvarint> | bytes
//
// Integers in the header are big endian. The CRC covers every byte of the
// frame but itself. Metadata is 0 for none, k for the k-th metadata defined
// earlier in the frame, or one more than the number defined so far, then
// defined right there: type <uvarint>, family, help and unit <str>. Labels
// are written sorted. The sample count and lowest timestamp come before
// the compressed body so that counting and the backlog's age need no
// decompression. A 2,000-series window takes about 13 bytes per sample
// (BenchmarkAppend, disk-B/sample). A relay frame's request has every
// series' labels as one run of Label messages, each a name then a value
// field (what the generated code writes; the receiver re-encodes a
// request that is not so); its samples are sent as they are, metadata
// with every batch of the frame. A window's sample count is never 0, so
// the leading zero tells the two apart; a Sluice from before relay frames
// counts a relay frame as undecodable (backlog_corrupt) after a
// downgrade.
//
// The cursor file is segment <8b> | offset <8b> | CRC32-C of both <4b>: the
// position just after the last frame every frame before which is
// resolved. It is written as cursor.tmp, fsynced and renamed over cursor;
// the directory is not fsynced (a lost rename only means sending again).
//
// # Durability and delivery
//
// Frames are written with write(2) and not fsynced on append (coalesced
// segments are, before they replace others). A kill -9 loses nothing
// written: the kernel holds it. Manager.Sync fsyncs every segment written
// since the last Sync, and the directory: the write-ahead log calls it
// before a checkpoint drops the log, because relayed remote_write series
// (which, unlike windows, cannot be recomputed) are durable only in the
// log until their frames are. The cursor is not part of it: a stale
// cursor only means sending again. A machine crash or power loss may lose the windows the
// kernel had not yet written back; that is acceptable because Sluice's
// outputs are cumulative and recomputed from the aggregate state, which
// the WAL keeps durable: the next window carries the totals, only those
// windows' resolution is lost.
//
// The cursor is persisted at most every 200 ms while batches are accepted,
// right away when it moves after a quiet spell, and when a target stops.
// Segments wholly before the cursor are deleted at once (except the one
// being appended to). After a crash, sending resumes at the persisted
// cursor, or at the start of the oldest segment left if the cursor's was
// deleted: what was resolved since is sent again. Delivery is
// at-least-once, which is harmless because a window's samples are
// deterministic (same series, timestamp and value). A batch never holds
// samples of a frame read back from disk together with another frame's,
// so that a receiver that rejects a whole request for one out-of-order
// sample (Prometheus does) only ever rejects a re-sent window, never a
// new one sent with it.
//
// On open, each segment is read through and cut at its first invalid frame
// (a torn tail, zeros, a CRC mismatch), logged; later segments are kept,
// unlike the WAL: frames are independent windows. Segments before the
// cursor's are deleted. Bad bytes never make opening fail. A frame that
// turns out unreadable later (disk damage while running) ends its segment
// and its samples are counted (reason backlog_corrupt). A failed append
// (disk full) is rolled back by truncating the segment to its last whole
// frame, or, if even that fails, the segment is sealed there and the next
// window starts a new one; the window is counted as dropped (reason
// backlog_write, logged once until a write succeeds) and Append returns.
//
// Stop lets each target send its backlog until its context ends; what is
// left stays on disk and is sent after the next start, in order. A target
// whose configuration changes is replaced by one that takes over its
// backlog. A target removed from the configuration sends what it can for a
// few seconds, then its directory is deleted (what was left is counted,
// reason shutdown); the first ApplyConfig also deletes the directories of
// targets no longer configured.
//
// # Bound and coalescing
//
// queue_config.max_backlog_bytes bounds the bytes not yet sent. When the
// backlog is over it, the dispatcher rewrites the oldest segments it has
// not read yet (never the one being appended to, never frames the shards
// hold): it reads them, keeps for each series only its newest float
// sample, its newest histogram and a staleness marker only if that is the
// series' newest entry, and writes the survivors as one segment in their
// original order (written and fsynced as coalesce.tmp, renamed over the
// last of them, the others deleted). It takes as many segments as would
// bring the backlog to half its limit. Sluice's series are cumulative
// (counters, histograms, current gauges), so the newest sample carries the
// total: only resolution is lost. The samples folded away are counted as
// dropped with reason coalesced: they are resolution, not data. If the
// backlog is still over the limit (series that do not repeat, or a
// coalescing that gained little, after which coalescing waits for a
// quarter of the limit to be appended), its oldest unread segments are
// deleted and counted (reason backlog_full). Neither touches the frames
// read ahead or the segment being appended to, so the backlog may exceed
// its limit by about capacity x shards samples plus one segment.
//
// # Shards
//
// Each target has min(queue_config.max_shards, 4) shards; a series always
// goes to shard hash(labels) % shards, and a shard sends one batch at a
// time, retrying it until it is accepted or dropped, so the samples of a
// series arrive in order, across restarts too (the shard count may change:
// the backlog holds no shard numbers). Each shard holds at most
// queue_config.capacity samples read ahead; when one is full the
// dispatcher waits. Dynamic resharding (as Prometheus does) is not
// implemented: one window per interval needs little concurrency, and four
// senders per target is plenty.
//
// # Batching
//
// Frames appended by this process and read from memory ("fresh": never
// sent before) share batches: a target that keeps up with many small
// remote_write requests sends max_samples_per_send samples per request,
// not a few per request. Frames read back from disk (after a restart, or
// once the in-memory copies ran out) are batched alone. If a receiver
// rejects a batch of several frames for good (a 4xx: Prometheus rejects a
// whole request for one out-of-order sample), the shard sends the batch
// again frame by frame, so one sender's bad samples never drop another's;
// only the frames rejected on their own are dropped. A shard sends when
// it holds max_samples_per_send samples that may share a batch, when the
// next samples may not join them (waiting cannot add to the batch), when
// a frame was appended to be sent promptly (every window and relayed
// request: waiting could only add latency; while a batch is being sent
// the next one fills) or read back after a restart, when
// batch_send_deadline has passed since its first buffered sample, and
// while draining for a stop.
//
// Fresh relay frames of at most max_samples_per_send samples skip the
// shards: the frame's snappy block is sent as the request body, or, for
// frames that queued up while every lane was busy, their blocks joined
// into one (whole.go). Their series keep their order because such a
// request goes only while the shards hold nothing and no whole request in
// flight shares a series with it, and frames for the shards wait until no
// whole request is in flight.
//
// # Sending
//
// Remote-Write 1.0 sends a prometheus.WriteRequest (one TimeSeries per
// sample, plus the metadata of every family in the batch), written
// directly: a 1.0 target's dispatcher decodes each series' labels into
// their protobuf encoding once (cached like labels, for the next few
// frames; the series of a window handed on in 8 frames or more are not
// cached: they would be dropped before the next window could use them),
// and the encoder
// copies those bytes into every TimeSeries, byte for byte what the
// generated code would write; 2.0 sends an
// io.prometheus.write.v2.Request with interned symbols and inline
// metadata. Bodies are snappy block-compressed. Network errors, 5xx and (if
// retry_on_http_429) 429 are retried with exponential backoff from
// min_backoff to max_backoff, a positive Retry-After (capped at 5 minutes)
// replacing the computed wait; each retry carries Retry-Attempt. Any other
// answer drops the batch, logs it once and counts it by status code.
// RW 2.0 response headers (samples written) are not checked.
//
// # Secrets
//
// Targets are named by DisplayName. URLs in errors are redacted, and every
// error text that reaches a log line or TargetStatus is scrubbed of the
// target's URL query, header values and inline credentials. Header values
// are never logged. Backlog directories are named after DisplayName, which
// holds no secret.
//
// # Self metrics
//
// Every series carries remote_name (the DisplayName); the series of a
// removed target are deleted by ApplyConfig:
//
//	sluice_forward_samples_sent_total                floats accepted
//	sluice_forward_histograms_sent_total             native histograms accepted
//	sluice_forward_samples_retried_total             samples re-sent, once per retry
//	sluice_forward_samples_dropped_total{reason}     "400"..., coalesced, backlog_full, backlog_write,
//	                                                 backlog_corrupt, shutdown, relabel, encode
//	sluice_forward_queue_samples                     samples waiting: on disk, read ahead or being sent
//	sluice_forward_queue_bytes                       in-memory size of those read ahead or being sent
//	sluice_forward_backlog_bytes                     bytes on disk not yet sent (what max_backlog_bytes bounds)
//	sluice_forward_backlog_oldest_timestamp_seconds  oldest unsent sample; time() minus it is the backlog's age, 0 if empty
//	sluice_forward_send_duration_seconds             one HTTP request
//	sluice_forward_requests_total{code}              by status, "error" without a response
//	sluice_forward_highest_sent_timestamp_seconds    highest timestamp accepted
//
// Series dropped by write_relabel_configs are counted under reason
// "relabel" although nothing went wrong, and samples folded by coalescing
// under "coalesced" although their totals survive, so that every sample
// appended is accounted for: sent, dropped by reason, or still queued.
package forward
