// Package forward sends Sluice's output to long-term stores with Prometheus
// remote_write (SPEC section 6): one queue per target, sharded concurrent
// senders, batching, Remote-Write 1.0 and 2.0, retries.
//
// # Data flow
//
// The aggregator hands each window to Manager.Append. Append converts the
// labels once, then for every target adds the external labels a series
// lacks, applies write_relabel_configs and copies the samples into the
// target's shards. It never waits for the network: the only locks it takes
// are held for a copy.
//
// # Shards
//
// Each target has min(queue_config.max_shards, 4) shards; a series always
// goes to shard hash(labels) % shards, and a shard sends one batch at a
// time, retrying it until it is accepted or dropped, so the samples of a
// series arrive in order. Dynamic resharding (as Prometheus does) is not
// implemented: one window per interval needs little concurrency, and four
// senders per target is plenty.
//
// # Buffer
//
// A shard buffers up to queue_config.capacity samples in memory. When a
// window does not fit, the oldest buffered samples are dropped and counted
// (reason "queue_full"): Append never blocks. The buffer sits behind the
// small backlog interface so that a disk-backed backlog can replace it.
//
// # Batching
//
// A shard sends when it holds max_samples_per_send samples, when
// batch_send_deadline has passed since its first buffered sample, and
// right after every Append: Append delivers a whole window, so waiting for
// the deadline could only add latency. Samples that arrive while a batch is
// in flight go into the next batch, which coalesces small appends under
// load.
//
// # Sending
//
// Remote-Write 1.0 sends a prometheus.WriteRequest (one TimeSeries per
// sample, plus the metadata of every family in the batch); 2.0 sends an
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
// are never logged.
//
// # Self metrics
//
// Every series carries remote_name (the DisplayName); the series of a
// removed target are deleted by ApplyConfig:
//
//	sluice_forward_samples_sent_total             float samples accepted
//	sluice_forward_histograms_sent_total          native histograms accepted
//	sluice_forward_samples_retried_total          samples re-sent, once per retry
//	sluice_forward_samples_dropped_total{reason}  "400"..., queue_full, shutdown, relabel, encode
//	sluice_forward_queue_samples                  samples buffered or being sent
//	sluice_forward_queue_bytes                    their approximate size
//	sluice_forward_send_duration_seconds          one HTTP request
//	sluice_forward_requests_total{code}           by status, "error" without a response
//	sluice_forward_highest_sent_timestamp_seconds highest timestamp accepted
//
// Series dropped by write_relabel_configs are counted under reason
// "relabel" although nothing went wrong, so that every sample appended is
// accounted for: sent, dropped by reason, or still queued.
package forward
